package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ctlTimeout bounds one rabbitmqctl or rabbitmq-diagnostics run.
const ctlTimeout = 60 * time.Second

// Rabbitmqctl runs rabbitmqctl with args against the local node, for at most
// a minute, and returns its standard output. It fails the test with the
// command's output when rabbitmqctl is missing, fails or times out.
// rabbitmqctl reaches the node on this machine, which is the test broker
// only when PIKA_TEST_URL names this machine. Commands that disturb other
// connections belong in tests that called [Disruptive].
func Rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runTool("rabbitmqctl", args...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return out
}

// runTool runs a RabbitMQ command-line tool and returns its standard output;
// the error carries both outputs.
func runTool(name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH (it comes with the rabbitmq-server package): %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = 5 * time.Second // do not hang on pipes held by a leftover child
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", ctlTimeout, err)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s",
			name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// localAlarms returns the resource alarms the local node reports, or "" when
// there are none.
func localAlarms() (string, error) {
	out, err := runTool("rabbitmq-diagnostics", "-q", "alarms", "--formatter", "json")
	if err != nil {
		return "", err
	}
	var res struct {
		Alarms []json.RawMessage `json:"alarms"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return "", fmt.Errorf("rabbitmq-diagnostics alarms: cannot read its output %q: %w", out, err)
	}
	if res.Alarms == nil && !strings.Contains(out, `"alarms"`) {
		return "", errors.New("rabbitmq-diagnostics alarms: output has no alarms field: " + out)
	}
	if len(res.Alarms) == 0 {
		return "", nil
	}
	var parts []string
	for _, a := range res.Alarms {
		parts = append(parts, string(a))
	}
	return strings.Join(parts, ", "), nil
}

// CloseConnection closes, with rabbitmqctl close_connection, the broker's
// connection whose connection_name client property is name (the client
// gets connection.close with 320 CONNECTION_FORCED and a text ending with
// reason), waiting up to wait for it to appear in list_connections. Only
// that connection is touched.
func CloseConnection(t testing.TB, name, reason string, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		out := Rabbitmqctl(t, "list_connections", "-q", "pid", "client_properties")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"`+name+`"`) {
				Rabbitmqctl(t, "close_connection", strings.Fields(line)[0], reason)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: no broker connection named %q; list_connections:\n%s", name, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
