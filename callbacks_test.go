package pika

import (
	"context"
	"testing"
	"time"
)

// Tests of issue 10 (callbacks and bounds): no application code under the
// connection's lock, bounded notification queues, the write buffer bound
// with requests in flight, and copies of the broker's tables.

// dialFake dials a fake broker with cfg (the broker's config plus what the
// test set) and closes the Conn at the end of the test.
func dialFake(t *testing.T, cfg Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig to the fake broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// TestServerPropertiesIsACopy checks that the table ServerProperties
// returns belongs to the caller: changing it, nested tables included, does
// not change what the next call returns.
func TestServerPropertiesIsACopy(t *testing.T) {
	b := newFakeBroker(t)
	c := dialFake(t, b.config())
	p := c.ServerProperties()
	if p["product"] != "fake" {
		t.Fatalf("ServerProperties = %v", p)
	}
	p["product"] = "changed"
	p["extra"] = true
	p["capabilities"].(Table)["publisher_confirms"] = false
	q := c.ServerProperties()
	if q["product"] != "fake" || q["extra"] != nil {
		t.Errorf("after changing the returned table, ServerProperties = %v", q)
	}
	if caps, _ := q["capabilities"].(Table); caps["publisher_confirms"] != true {
		t.Errorf("after changing the returned capabilities, ServerProperties()[capabilities] = %v", caps)
	}
}

// TestServerPropertiesCopyFieldValue checks the deep copy behind
// ServerProperties on every kind of nested value.
func TestServerPropertiesCopyFieldValue(t *testing.T) {
	orig := Table{"t": Table{"a": []any{Table{"x": int32(1)}, []byte("b")}}, "n": nil, "s": "str"}
	cp := copyFieldValue(orig).(Table)
	cp["t"].(Table)["a"].([]any)[0].(Table)["x"] = int32(2)
	cp["t"].(Table)["a"].([]any)[1].([]byte)[0] = 'z'
	if orig["t"].(Table)["a"].([]any)[0].(Table)["x"] != int32(1) || string(orig["t"].(Table)["a"].([]any)[1].([]byte)) != "b" {
		t.Errorf("changing the copy changed the original: %v", orig)
	}
	if cp["s"] != "str" || cp["n"] != nil {
		t.Errorf("copy %v", cp)
	}
	if copyFieldValue(Table(nil)).(Table) != nil {
		t.Error("copy of a nil table is not nil")
	}
}
