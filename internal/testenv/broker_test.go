package testenv

import (
	"os/exec"
	"testing"
)

// TestRealBroker checks Broker and the alarm check against the broker the
// integration tests use.
func TestRealBroker(t *testing.T) {
	url := Broker(t)
	ep, err := parseEndpoint(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.probe(); err != nil {
		t.Fatalf("Broker returned %s but the probe fails: %v", url, err)
	}
	if !ep.local() {
		t.Skipf("broker %s is not on this machine: rabbitmq-diagnostics cannot check its alarms", ep.addr())
	}
	if _, err := exec.LookPath("rabbitmq-diagnostics"); err != nil {
		t.Skipf("rabbitmq-diagnostics not in PATH: cannot check the alarm reader against it")
	}
	alarms, err := localAlarms()
	if err != nil {
		t.Fatalf("localAlarms: %v", err)
	}
	if alarms != "" {
		t.Errorf("the test broker reports resource alarms: %s", alarms)
	}
}
