package pika

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
)

// StreamTracker remembers the offset of the last delivery a stream consumer
// processed, so that its consumer resumes right after it whenever it
// starts again: after a connection recovery (on another node of a cluster,
// say), after the library restarted it (see RecoveryConsumerWaiting), or
// when the application consumes again with the same tracker. Without it,
// recovery restarts a stream consumer with the x-stream-offset it was first
// given ("first" reads the whole stream again, "next" skips what was
// written meanwhile).
//
// Use it through ConsumeOptions.Stream, and call Processed with each
// delivery once the application is done with it:
//
//	// RabbitMQ refuses a stream consumer without a prefetch count.
//	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 100}); err != nil {
//		return err
//	}
//	tr := pika.NewStreamTracker(pika.StreamFirst)
//	cons, err := ch.Consume(ctx, "events", pika.ConsumeOptions{Stream: tr})
//	if err != nil {
//		return err
//	}
//	for d, err := range cons.All(ctx) {
//		if err != nil {
//			return err // the consumer or ctx ended; d is nil
//		}
//		handle(d)
//		tr.Processed(d)
//		d.Ack(false)
//	}
//
// A stream is read in chunks, and a consumer attached at an offset may be
// sent the earlier messages of that offset's chunk: the consumer drops (and
// acknowledges, to keep its credit) every delivery at or before the last
// processed offset, so the application sees each offset once, in order,
// across restarts. A delivery that was buffered but not processed when the
// connection was lost is sent again.
//
// A StreamTracker is safe for concurrent use. Use one per consumer.
type StreamTracker struct {
	mu    sync.Mutex
	start any // the x-stream-offset of the first attach
	last  int64
	has   bool
}

// NewStreamTracker returns a tracker whose consumer first attaches at
// start, any value ConsumerArgs.StreamOffset accepts (StreamFirst, an
// offset, a time, ...); nil means the broker's default (next).
func NewStreamTracker(start any) *StreamTracker {
	return &StreamTracker{start: start}
}

// NewStreamTrackerAfter returns a tracker that resumes after offset, the
// last one processed, for example one the application stored.
func NewStreamTrackerAfter(offset int64) *StreamTracker {
	return &StreamTracker{last: offset, has: offset >= 0}
}

// Processed records that the application is done with d. It fails, and
// records nothing, when d has no x-stream-offset header (it did not come
// from a stream).
func (t *StreamTracker) Processed(d *Delivery) error {
	off, err := StreamOffsetOf(d)
	if err != nil {
		return err
	}
	t.mu.Lock()
	if !t.has || off > t.last {
		t.last, t.has = off, true
	}
	t.mu.Unlock()
	return nil
}

// Last returns the offset of the last delivery processed, and false when
// none was.
func (t *StreamTracker) Last() (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last, t.has
}

// attachAt returns the x-stream-offset to attach with: right after the last
// processed offset, or the start.
func (t *StreamTracker) attachAt() any {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.has {
		return t.last + 1
	}
	return t.start
}

// seen reports whether d is at or before the last processed offset.
func (t *StreamTracker) seen(d *Delivery) bool {
	off, err := StreamOffsetOf(d)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.has && off <= t.last
}

// StreamOffsetOf returns the stream offset of d, from the x-stream-offset
// header RabbitMQ sets on deliveries from a stream.
func StreamOffsetOf(d *Delivery) (int64, error) {
	v, ok := d.Headers["x-stream-offset"]
	if !ok {
		return 0, errors.New("pika: delivery has no x-stream-offset header (not from a stream)")
	}
	switch v := v.(type) {
	case int64:
		return v, nil
	case int32:
		return int64(v), nil
	case uint32:
		return int64(v), nil
	case int16:
		return int64(v), nil
	case int8:
		return int64(v), nil
	case uint16:
		return int64(v), nil
	case uint8:
		return int64(v), nil
	}
	return 0, fmt.Errorf("pika: x-stream-offset header of type %T, want an integer", v)
}

// streamArguments returns the consumer's arguments with x-stream-offset set
// from its tracker.
func streamArguments(args Table, t *StreamTracker) (Table, error) {
	at, err := ConsumerArgs{StreamOffset: t.attachAt()}.Table()
	if err != nil {
		return nil, err
	}
	out := maps.Clone(args)
	if out == nil {
		out = Table{}
	}
	maps.Copy(out, at)
	return out, nil
}

// checkConsumeArguments refuses, with a clear error, what the broker would
// ignore or refuse late: a tracker with its own x-stream-offset argument,
// and stream filtering on a RabbitMQ older than 3.13 (which ignores
// x-stream-filter and delivers everything).
func checkConsumeArguments(opts ConsumeOptions, serverProperties func() Table) error {
	if opts.Stream != nil {
		if _, ok := opts.Arguments["x-stream-offset"]; ok {
			return errors.New("pika: ConsumeOptions.Stream sets x-stream-offset: remove it from Arguments (give it to NewStreamTracker)")
		}
		if _, err := (ConsumerArgs{StreamOffset: opts.Stream.attachAt()}).Table(); err != nil {
			return err
		}
	}
	for _, key := range []string{"x-stream-filter", "x-stream-match-unfiltered"} {
		if _, ok := opts.Arguments[key]; !ok {
			continue
		}
		server := serverProperties()
		version, _ := server["version"].(string)
		if product, _ := server["product"].(string); product == "RabbitMQ" && versionBefore(version, 3, 13) {
			return fmt.Errorf("pika: consumer argument %s (stream filtering) needs RabbitMQ 3.13 or later; the broker is RabbitMQ %s, which would ignore it and deliver every message", key, version)
		}
	}
	return nil
}

// versionBefore reports whether the dotted version v is before
// major.minor; false when v cannot be read.
func versionBefore(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma < major || ma == major && mi < minor
}
