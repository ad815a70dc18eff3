package testenv

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// MemoryWatermark returns the local node's memory high watermark setting as
// the arguments that give it back to rabbitmqctl set_vm_memory_high_watermark:
// {"0.4"} for a relative one, {"absolute", "N"} for an absolute one. It
// fails the test when the setting cannot be read, so that a disruptive test
// never changes what it could not restore.
func MemoryWatermark(t testing.TB) []string {
	t.Helper()
	out := Rabbitmqctl(t, "status", "--formatter", "json")
	var st struct {
		Setting map[string]json.Number `json:"vm_memory_high_watermark_setting"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("testenv: rabbitmqctl status: cannot read the watermark from %q: %v", out, err)
	}
	if len(st.Setting) == 1 {
		if v, ok := st.Setting["relative"]; ok {
			return []string{string(v)}
		}
		if v, ok := st.Setting["absolute"]; ok {
			return []string{"absolute", string(v)}
		}
	}
	t.Fatalf("testenv: rabbitmqctl status: unknown vm_memory_high_watermark_setting %v", st.Setting)
	return nil
}

// WaitNoAlarms waits up to a minute for the local node to report no
// resource alarm, and fails the test if it still does.
func WaitNoAlarms(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		a, err := localAlarms()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if a == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: the broker still reports alarms: %s", a)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
