// Package route holds the matching rules of RabbitMQ's exchange types: which
// bindings of a direct, fanout, topic or headers exchange a message with a
// given routing key and headers matches. It knows nothing about queues or
// connections; the broker keeps the bindings and asks these functions.
//
// The functions are pure and safe for concurrent use.
package route

import (
	"bytes"
	"math"
	"strings"
	"time"

	"github.com/pika-go/pika/wire"
)

// Exchange types RabbitMQ ships with.
const (
	Direct  = "direct"
	Fanout  = "fanout"
	Topic   = "topic"
	Headers = "headers"
)

// KnownType reports whether kind is an exchange type this package matches.
func KnownType(kind string) bool {
	switch kind {
	case Direct, Fanout, Topic, Headers:
		return true
	}
	return false
}

// Match reports whether a binding with key bindingKey and arguments args on
// an exchange of type kind matches a message with routingKey and headers.
// An unknown kind matches nothing.
func Match(kind, bindingKey string, args wire.Table, routingKey string, headers wire.Table) bool {
	switch kind {
	case Direct:
		return bindingKey == routingKey
	case Fanout:
		return true
	case Topic:
		return TopicMatch(bindingKey, routingKey)
	case Headers:
		return HeadersMatch(args, headers)
	}
	return false
}

// TopicMatch applies RabbitMQ's topic rules: both keys are split into words
// at '.', an empty key having no words at all; "*" in the binding key
// matches exactly one word (possibly empty, as between two dots) and "#"
// matches zero or more words.
func TopicMatch(bindingKey, routingKey string) bool {
	return topicWords(splitWords(bindingKey), splitWords(routingKey))
}

func splitWords(key string) []string {
	if key == "" {
		return nil
	}
	return strings.Split(key, ".")
}

// topicWords matches word lists; "#" backtracks over the routing words it
// may absorb. Consecutive "#" are collapsed first so the recursion stays
// linear in practice.
func topicWords(pat, words []string) bool {
	for len(pat) > 0 {
		p := pat[0]
		if p == "#" {
			for len(pat) > 1 && pat[1] == "#" {
				pat = pat[1:]
			}
			rest := pat[1:]
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(words); i++ {
				if topicWords(rest, words[i:]) {
					return true
				}
			}
			return false
		}
		if len(words) == 0 {
			return false
		}
		if p != "*" && p != words[0] {
			return false
		}
		pat, words = pat[1:], words[1:]
	}
	return len(words) == 0
}

// HeadersMatch applies RabbitMQ's headers exchange rules. The binding's
// "x-match" argument is "all" (the default), "any", "all-with-x" or
// "any-with-x". Binding arguments whose names start with "x-" take no part
// in matching; message headers whose names start with "x-" are ignored
// unless the mode ends in "-with-x". A binding argument of type void matches
// a header of that name with any value; otherwise the values must be equal
// (numbers compare by value across integer and float types, strings and
// byte arrays by bytes). With "all" a binding without other arguments
// matches every message; with "any" it matches none.
func HeadersMatch(args, headers wire.Table) bool {
	mode, _ := args["x-match"].(string)
	any := mode == "any" || mode == "any-with-x"
	withX := strings.HasSuffix(mode, "-with-x")
	for k, want := range args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		got, ok := headers[k]
		matched := ok && (want == nil || ValuesEqual(want, got))
		if any && matched {
			return true
		}
		if !any && !matched {
			return false
		}
	}
	return !any
}

// ValidMatchMode reports whether v is an acceptable x-match argument (absent
// counts as acceptable).
func ValidMatchMode(v any, present bool) bool {
	if !present {
		return true
	}
	s, ok := v.(string)
	if !ok {
		return false
	}
	switch s {
	case "all", "any", "all-with-x", "any-with-x":
		return true
	}
	return false
}

// ValuesEqual compares two field table values the way RabbitMQ's headers
// exchange and argument equivalence do: numbers by value, strings and byte
// arrays by their bytes, tables and arrays element by element.
func ValuesEqual(a, b any) bool {
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x == y
	}
	if x, ok := text(a); ok {
		y, ok := text(b)
		return ok && bytes.Equal(x, y)
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case wire.Decimal:
		y, ok := b.(wire.Decimal)
		return ok && x == y
	case wire.Table:
		y, ok := b.(wire.Table)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !ValuesEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !ValuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int8:
		return float64(x), true
	case uint8:
		return float64(x), true
	case int16:
		return float64(x), true
	case uint16:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint32:
		return float64(x), true
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		if math.IsNaN(x) {
			return 0, false
		}
		return x, true
	}
	return 0, false
}

func text(v any) ([]byte, bool) {
	switch x := v.(type) {
	case string:
		return []byte(x), true
	case []byte:
		return x, true
	}
	return nil, false
}

// Int returns an integer argument value of any AMQP integer type, as
// RabbitMQ accepts for x-message-ttl, x-max-length and the like.
func Int(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}
