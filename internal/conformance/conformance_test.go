package conformance

import (
	"strings"
	"testing"
)

func TestTableComplete(t *testing.T) {
	if n := len(table); n < 150 {
		t.Errorf("the table has %d scenarios, want at least 150", n)
	}
	for _, tab := range [][]Scenario{table, alarmTable, restartTable} {
		if err := checkTable(tab); err != nil {
			t.Error(err)
		}
	}
	seen := map[string]bool{}
	all := append(append(Scenarios(), AlarmScenarios()...), RestartScenarios()...)
	for _, s := range all {
		area, rest, ok := strings.Cut(s.Name, "/")
		if !ok || area == "" || rest == "" || sanitize(s.Name) != strings.ReplaceAll(s.Name, "/", "_") {
			t.Errorf("scenario name %q is not area/behaviour in plain characters", s.Name)
		}
		if seen[s.Name] {
			t.Errorf("scenario %q is in two tables", s.Name)
		}
		seen[s.Name] = true
	}
}

func TestCheckTable(t *testing.T) {
	f := func(*Env) {}
	ok := Scenario{Name: "a/b", Checks: "c", RabbitMQ: "r", Func: f}
	for _, tc := range []struct {
		name string
		tab  []Scenario
		want string // substring of the error; "" for none
	}{
		{"fine", []Scenario{ok}, ""},
		{"no name", []Scenario{{Checks: "c", RabbitMQ: "r", Func: f}}, "no name"},
		{"twice", []Scenario{ok, ok}, "twice"},
		{"no checks", []Scenario{{Name: "a/b", RabbitMQ: "r", Func: f}}, "does not say"},
		{"no behaviour", []Scenario{{Name: "a/b", Checks: "c", Func: f}}, "does not say"},
		{"no func", []Scenario{{Name: "a/b", Checks: "c", RabbitMQ: "r"}}, "no function"},
	} {
		err := checkTable(tc.tab)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestTextMatches(t *testing.T) {
	for _, tc := range []struct {
		got, want string
		match     bool
	}{
		{"NOT_FOUND - no queue 'q'", "NOT_FOUND - no queue 'q'", true},
		{"NOT_FOUND - no queue 'q'", "NOT_FOUND - no queue 'r'", false},
		{"NOT_FOUND - no queue 'q'", "NOT_FOUND*", true},
		{"NOT_FOUND - no queue 'q'", "ACCESS_REFUSED*", false},
		{"FRAME_ERROR - type 1, all octets = <<1,2>>: {x,0}", "FRAME_ERROR - type 1, all octets = <<*>>: {x,0}", true},
		{"FRAME_ERROR - type 1, all octets = <<1,2>>: {x,1}", "FRAME_ERROR - type 1, all octets = <<*>>: {x,0}", false},
		{"name 'amq.x' contains reserved prefix 'amq.*'", "name 'amq.x' contains reserved prefix 'amq.*'", true},
		{"abc", "*", true},
		{"", "*", true},
		{"ab", "a*b*c", false},
		{"aXbYc", "a*b*c", true},
		{"abc", "abc*", true},
		{"ab", "abc*", false},
	} {
		if got := textMatches(tc.got, tc.want); got != tc.match {
			t.Errorf("textMatches(%q, %q) = %v, want %v", tc.got, tc.want, got, tc.match)
		}
	}
}

func TestSanitize(t *testing.T) {
	if got := sanitize("queue/ttl zero:é"); got != "queue_ttl_zero__" {
		t.Errorf("sanitize = %q", got)
	}
}
