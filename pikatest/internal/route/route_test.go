package route

import (
	"testing"

	"github.com/pika-go/pika/wire"
)

func TestTopicMatch(t *testing.T) {
	cases := []struct {
		binding, key string
		want         bool
	}{
		{"a.b.c", "a.b.c", true},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.c", false},
		{"a.#", "a", true},
		{"a.#", "a.b.c", true},
		{"#", "", true},
		{"#", "a.b", true},
		{"*", "", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"", "", true},
		{"", "a", false},
		{"a.*", "a.", true}, // the empty word after the dot is a word
		{"#.c", "c", true},
		{"#.c", "a.b.c", true},
		{"#.c", "a.b.cd", false},
		{"a.#.#.d", "a.d", true},
		{"a.#.c.#", "a.x.y.c", true},
		{"a.#.c.#", "a.x.y", false},
		{"*.#", "", false},
		{"*.#", "a", true},
		{"a..b", "a..b", true},
		{"a.*.b", "a..b", true},
	}
	for _, c := range cases {
		if got := TopicMatch(c.binding, c.key); got != c.want {
			t.Errorf("TopicMatch(%q, %q) = %v, want %v", c.binding, c.key, got, c.want)
		}
	}
}

func TestHeadersMatch(t *testing.T) {
	cases := []struct {
		name    string
		args    wire.Table
		headers wire.Table
		want    bool
	}{
		{"all default", wire.Table{"a": "1", "b": int32(2)}, wire.Table{"a": "1", "b": int64(2)}, true},
		{"all missing", wire.Table{"a": "1", "b": int32(2)}, wire.Table{"a": "1"}, false},
		{"all no args", wire.Table{"x-match": "all"}, nil, true},
		{"any no args", wire.Table{"x-match": "any"}, wire.Table{"a": "1"}, false},
		{"any one", wire.Table{"x-match": "any", "a": "1", "b": "2"}, wire.Table{"b": "2"}, true},
		{"any none", wire.Table{"x-match": "any", "a": "1"}, wire.Table{"a": "2"}, false},
		{"void is presence", wire.Table{"a": nil}, wire.Table{"a": "anything"}, true},
		{"x- ignored in binding", wire.Table{"x-foo": "1"}, nil, true},
		{"x- header ignored", wire.Table{"x-match": "any", "x-foo": "1"}, wire.Table{"x-foo": "1"}, false},
		{"any-with-x", wire.Table{"x-match": "any-with-x", "x-foo": "1"}, wire.Table{"x-foo": "1"}, true},
		{"all-with-x", wire.Table{"x-match": "all-with-x", "x-foo": "1"}, wire.Table{"x-foo": "2"}, false},
		{"string vs bytes", wire.Table{"a": "v"}, wire.Table{"a": []byte("v")}, true},
		{"bool", wire.Table{"a": true}, wire.Table{"a": false}, false},
	}
	for _, c := range cases {
		if got := HeadersMatch(c.args, c.headers); got != c.want {
			t.Errorf("%s: HeadersMatch(%v, %v) = %v, want %v", c.name, c.args, c.headers, got, c.want)
		}
	}
}

func TestMatchKinds(t *testing.T) {
	if !Match(Direct, "k", nil, "k", nil) || Match(Direct, "k", nil, "K", nil) {
		t.Error("direct")
	}
	if !Match(Fanout, "x", nil, "y", nil) {
		t.Error("fanout")
	}
	if Match("x-unknown", "k", nil, "k", nil) {
		t.Error("unknown type matched")
	}
	if KnownType("x-consistent-hash") || !KnownType(Headers) {
		t.Error("KnownType")
	}
}

func TestValuesEqual(t *testing.T) {
	if !ValuesEqual(wire.Table{"a": []any{int8(1), "x"}}, wire.Table{"a": []any{int64(1), []byte("x")}}) {
		t.Error("nested equal values differ")
	}
	if ValuesEqual(int32(1), "1") || ValuesEqual(nil, int32(0)) {
		t.Error("different types equal")
	}
	if v, ok := Int(uint16(7)); !ok || v != 7 {
		t.Error("Int")
	}
	if _, ok := Int("7"); ok {
		t.Error("Int of a string")
	}
	if !ValidMatchMode(nil, false) || ValidMatchMode("some", true) || ValidMatchMode(int32(1), true) {
		t.Error("ValidMatchMode")
	}
}
