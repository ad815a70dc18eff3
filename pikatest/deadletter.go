package pikatest

import (
	"time"

	"github.com/pika-go/pika/pikatest/internal/store"
	"github.com/pika-go/pika/wire"
)

// deadLetter republishes m, which q dropped for reason ("expired",
// "rejected" or "maxlen"), to q's dead-letter exchange with an x-death
// header as RabbitMQ 3.10 writes it. Without a dead-letter exchange, or
// when it does not exist, the message is dropped.
func (q *queue) deadLetter(m *store.Message, reason string) {
	if q.dlx == nil {
		return
	}
	vh := q.vh
	x := vh.exchanges[*q.dlx]
	if x == nil {
		return
	}
	props := m.Props
	headers := make(wire.Table, len(props.Headers)+4)
	for k, v := range props.Headers {
		headers[k] = v
	}
	entry := wire.Table{
		"count":        int64(1),
		"reason":       reason,
		"queue":        q.name,
		"time":         time.Now().UTC().Truncate(time.Second),
		"exchange":     m.Exchange,
		"routing-keys": stringsToArray(m.RoutingKeys),
	}
	if reason == "expired" && props.Expiration != "" {
		entry["original-expiration"] = props.Expiration
		props.Expiration = ""
		props.Flags &^= wire.FlagExpiration
	}
	var deaths []any
	if old, ok := headers["x-death"].([]any); ok {
		for _, d := range old {
			t, ok := d.(wire.Table)
			if ok && t["queue"] == q.name && t["reason"] == reason {
				n, _ := t["count"].(int64)
				entry["count"] = n + 1
				// The updated entry moves to the front, keeping its
				// original exchange and routing keys.
				entry["exchange"] = t["exchange"]
				entry["routing-keys"] = t["routing-keys"]
				continue
			}
			deaths = append(deaths, d)
		}
	}
	headers["x-death"] = append([]any{entry}, deaths...)
	if _, ok := headers["x-first-death-reason"]; !ok {
		headers["x-first-death-reason"] = reason
		headers["x-first-death-queue"] = q.name
		headers["x-first-death-exchange"] = m.Exchange
	}
	props.Headers = headers
	keys := m.RoutingKeys
	if q.dlrk != nil {
		keys = []string{*q.dlrk}
	}
	c := &store.Content{Exchange: *q.dlx, RoutingKey: keys[0], RoutingKeys: keys, Props: props, Body: m.Body}
	c.Header = encodeHeader(c)
	targets := vh.route(x, keys, headers, nil)
	now := time.Now().UnixNano()
	for _, t := range targets {
		if cycles(headers, t.name) {
			continue
		}
		t.enqueue(c, now)
	}
}

// cycles reports whether a dead-lettered message would return to queue
// name without any rejection on the way, which RabbitMQ drops.
func cycles(headers wire.Table, name string) bool {
	deaths, _ := headers["x-death"].([]any)
	seen := false
	for _, d := range deaths {
		t, _ := d.(wire.Table)
		if t["reason"] == "rejected" {
			return false
		}
		if t["queue"] == name {
			seen = true
		}
	}
	return seen
}

func stringsToArray(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// encodeHeader encodes the content header payload of c.
func encodeHeader(c *store.Content) []byte {
	h := wire.ContentHeader{ClassID: wire.ClassBasic, BodySize: uint64(len(c.Body)), Properties: c.Props}
	b, err := h.AppendTo(nil)
	if err != nil {
		// The properties came from a decoded header plus values this
		// package builds, all of which encode.
		b, _ = (&wire.ContentHeader{ClassID: wire.ClassBasic, BodySize: uint64(len(c.Body))}).AppendTo(nil)
	}
	return b
}
