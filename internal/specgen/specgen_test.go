package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGoName(t *testing.T) {
	for in, want := range map[string]string{
		"consumer-tag": "ConsumerTag", "get-ok": "GetOk", "class-id": "ClassID",
		"nowait": "NoWait", "no-wait": "NoWait", "NOT-FOUND": "NotFound", "app-id": "AppID",
		"update-secret-ok": "UpdateSecretOk", "type": "Type",
	} {
		if got := goName(in); got != want {
			t.Errorf("goName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGroupsPackEightBitsPerOctet(t *testing.T) {
	var fs []*field
	for range 9 {
		fs = append(fs, &field{Name: "b", Type: "bit"})
	}
	fs = append(fs, &field{Name: "s", Type: "short"}, &field{Name: "c", Type: "bit"})
	gs := groups(fs)
	var sizes []int
	for _, g := range gs {
		sizes = append(sizes, len(g.fields))
	}
	if len(gs) != 4 || sizes[0] != 8 || sizes[1] != 1 || gs[2].bits || !gs[3].bits ||
		bitsVar(gs[0]) != "bits" || bitsVar(gs[1]) != "bits1" || bitsVar(gs[3]) != "bits2" {
		t.Errorf("groups: sizes %v", sizes)
	}
}

// TestLoadRejectsDisagreement edits a copy of the XML and checks that load
// notices a JSON/XML mismatch and an erratum the XML no longer needs.
func TestLoadRejectsDisagreement(t *testing.T) {
	jsonPath := "../../spec/amqp-rabbitmq-0.9.1.json"
	xmlPath := "../../spec/amqp0-9-1.extended.xml"
	if _, err := load(jsonPath, xmlPath); err != nil {
		t.Fatalf("real spec: %v", err)
	}
	xb, err := os.ReadFile(xmlPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`<method name = "recover" index = "110"`, `<method name = "recover" index = "111"`, "XML index"},
		{`<response name = "qos-ok" />`, ``, "synchronous=true but 0 responses"},
		{`<method name = "recover" index = "110" label = "redeliver unacknowledged messages">`,
			`<method name = "recover" index = "110" label = "redeliver unacknowledged messages"><response name = "recover-ok" />`,
			"erratum for basic.recover no longer changes anything"},
	} {
		x := string(xb)
		if !strings.Contains(x, tc.old) {
			t.Fatalf("XML lacks %q", tc.old)
		}
		p := filepath.Join(t.TempDir(), "spec.xml")
		if err := os.WriteFile(p, []byte(strings.Replace(x, tc.old, tc.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := load(jsonPath, p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("after replacing %q: %v, want an error containing %q", tc.old, err, tc.want)
		}
	}
}
