package pika

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

func TestQueueArgsTable(t *testing.T) {
	tests := []struct {
		name string
		args QueueArgs
		want Table
	}{
		{"zero", QueueArgs{}, Table{}},
		{"quorum", QueueArgs{Type: QueueQuorum, DeliveryLimit: 5, QuorumInitialGroupSize: 3, LeaderLocator: "client-local",
			DeadLetterExchange: "dlx", DeadLetterStrategy: DeadLetterAtLeastOnce, Overflow: OverflowRejectPublish},
			Table{"x-queue-type": "quorum", "x-delivery-limit": int64(5), "x-quorum-initial-group-size": int64(3),
				"x-queue-leader-locator": "client-local", "x-dead-letter-exchange": "dlx",
				"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}},
		{"classic limits", QueueArgs{Type: QueueClassic, MessageTTL: 1500 * time.Millisecond, Expires: time.Hour,
			MaxLength: 100, MaxLengthBytes: 1 << 30, Overflow: OverflowDropHead, MaxPriority: 10, Lazy: true,
			SingleActiveConsumer: true},
			Table{"x-queue-type": "classic", "x-message-ttl": int64(1500), "x-expires": int64(3600000),
				"x-max-length": int64(100), "x-max-length-bytes": int64(1 << 30), "x-overflow": "drop-head",
				"x-max-priority": int64(10), "x-queue-mode": "lazy", "x-single-active-consumer": true}},
		{"dead-letter routing key alone goes through the default exchange", QueueArgs{DeadLetterRoutingKey: "dlq"},
			Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}},
		{"dead-letter exchange and key", QueueArgs{DeadLetterExchange: "dlx", DeadLetterRoutingKey: "k"},
			Table{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "k"}},
		{"stream", QueueArgs{Type: QueueStream, MaxAge: 7 * 24 * time.Hour, StreamMaxSegmentSizeBytes: 50_000_000, MaxLengthBytes: 1e9},
			Table{"x-queue-type": "stream", "x-max-age": "604800s", "x-stream-max-segment-size-bytes": int64(50_000_000),
				"x-max-length-bytes": int64(1e9)}},
		{"max priority bound", QueueArgs{MaxPriority: 255}, Table{"x-max-priority": int64(255)}},
		{"extra", QueueArgs{Type: QueueQuorum, Extra: Table{"x-message-ttl": int64(0), "x-custom": "v"}},
			Table{"x-queue-type": "quorum", "x-message-ttl": int64(0), "x-custom": "v"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.args.Table()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Table() = %#v\nwant      %#v", got, tt.want)
			}
			// Every table encodes.
			if _, err := wire.AppendTable(nil, got); err != nil {
				t.Errorf("table does not encode: %v", err)
			}
		})
	}
}

func TestQueueArgsTableErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  QueueArgs
		words []string // all in the error
	}{
		{"negative TTL", QueueArgs{MessageTTL: -time.Second}, []string{"MessageTTL", "x-message-ttl", "negative"}},
		{"sub-millisecond TTL", QueueArgs{MessageTTL: 1500 * time.Microsecond}, []string{"MessageTTL", "1.5ms", "whole number of milliseconds"}},
		{"sub-millisecond expiry", QueueArgs{Expires: time.Nanosecond}, []string{"Expires", "x-expires"}},
		{"negative max length", QueueArgs{MaxLength: -1}, []string{"MaxLength", "x-max-length", "-1"}},
		{"negative max bytes", QueueArgs{MaxLengthBytes: -5}, []string{"MaxLengthBytes", "x-max-length-bytes"}},
		{"priority above 255", QueueArgs{MaxPriority: 256}, []string{"MaxPriority", "x-max-priority", "256", "1 to 255"}},
		{"negative delivery limit", QueueArgs{DeliveryLimit: -2}, []string{"DeliveryLimit"}},
		{"negative group size", QueueArgs{QuorumInitialGroupSize: -1}, []string{"QuorumInitialGroupSize"}},
		{"negative segment size", QueueArgs{StreamMaxSegmentSizeBytes: -1}, []string{"StreamMaxSegmentSizeBytes"}},
		{"negative max age", QueueArgs{MaxAge: -time.Hour}, []string{"MaxAge", "x-max-age", "not positive"}},
		{"fractional max age", QueueArgs{MaxAge: 1500 * time.Millisecond}, []string{"MaxAge", "whole number of seconds"}},
		{"extra repeats a field", QueueArgs{Type: QueueQuorum, Extra: Table{"x-queue-type": "classic"}}, []string{"Extra", "x-queue-type", "also set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.args.Table()
			if err == nil {
				t.Fatalf("Table() = %v, want an error", got)
			}
			if got != nil {
				t.Errorf("Table() returned %v with the error", got)
			}
			for _, w := range append(tt.words, "QueueArgs") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConsumerArgsTable(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 30, 15, 999_000_000, time.FixedZone("X", 3600))
	tests := []struct {
		name string
		args ConsumerArgs
		want Table
	}{
		{"zero", ConsumerArgs{}, Table{}},
		{"priority", ConsumerArgs{Priority: 5}, Table{"x-priority": int64(5)}},
		{"negative priority", ConsumerArgs{Priority: -3}, Table{"x-priority": int64(-3)}},
		{"first", ConsumerArgs{StreamOffset: StreamFirst}, Table{"x-stream-offset": "first"}},
		{"last", ConsumerArgs{StreamOffset: StreamLast}, Table{"x-stream-offset": "last"}},
		{"next", ConsumerArgs{StreamOffset: StreamNext}, Table{"x-stream-offset": "next"}},
		{"int offset", ConsumerArgs{StreamOffset: 42}, Table{"x-stream-offset": int64(42)}},
		{"int64 offset", ConsumerArgs{StreamOffset: int64(0)}, Table{"x-stream-offset": int64(0)}},
		{"uint64 offset", ConsumerArgs{StreamOffset: uint64(math.MaxInt64)}, Table{"x-stream-offset": int64(math.MaxInt64)}},
		{"time rounds down to the second", ConsumerArgs{StreamOffset: at}, Table{"x-stream-offset": time.Date(2024, 5, 1, 11, 30, 15, 0, time.UTC)}},
		{"age", ConsumerArgs{StreamOffset: 10 * time.Minute}, Table{"x-stream-offset": "600s"}},
		{"string position", ConsumerArgs{StreamOffset: "first"}, Table{"x-stream-offset": "first"}},
		{"string interval", ConsumerArgs{StreamOffset: "7D"}, Table{"x-stream-offset": "7D"}},
		{"extra", ConsumerArgs{Priority: 1, Extra: Table{"x-stream-filter": "eu"}}, Table{"x-priority": int64(1), "x-stream-filter": "eu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.args.Table()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Table() = %#v\nwant      %#v", got, tt.want)
			}
			if _, err := wire.AppendTable(nil, got); err != nil {
				t.Errorf("table does not encode: %v", err)
			}
		})
	}
}

func TestConsumerArgsTableErrors(t *testing.T) {
	type consumerCase struct {
		name  string
		args  ConsumerArgs
		words []string
	}
	tests := []consumerCase{
		{"unknown position", ConsumerArgs{StreamOffset: StreamPosition("middle")}, []string{"StreamOffset", "x-stream-offset", `"middle"`}},
		{"negative offset", ConsumerArgs{StreamOffset: -1}, []string{"StreamOffset", "-1", "negative"}},
		{"negative int64 offset", ConsumerArgs{StreamOffset: int64(-7)}, []string{"-7"}},
		{"huge uint64 offset", ConsumerArgs{StreamOffset: uint64(math.MaxUint64)}, []string{"out of range"}},
		{"time before 1970", ConsumerArgs{StreamOffset: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)}, []string{"before 1970"}},
		{"zero time", ConsumerArgs{StreamOffset: time.Time{}}, []string{"before 1970"}},
		{"negative age", ConsumerArgs{StreamOffset: -time.Minute}, []string{"not positive"}},
		{"fractional age", ConsumerArgs{StreamOffset: 1500 * time.Millisecond}, []string{"whole number of seconds"}},
		{"bad string", ConsumerArgs{StreamOffset: "start"}, []string{`"start"`, "interval"}},
		{"interval without unit", ConsumerArgs{StreamOffset: "10"}, []string{`"10"`}},
		{"interval of zero", ConsumerArgs{StreamOffset: "0s"}, []string{`"0s"`}},
		{"interval with a bad unit", ConsumerArgs{StreamOffset: "5w"}, []string{`"5w"`}},
		{"negative interval", ConsumerArgs{StreamOffset: "-5s"}, []string{`"-5s"`}},
		{"other type", ConsumerArgs{StreamOffset: 1.5}, []string{"unsupported type float64"}},
		{"extra repeats a field", ConsumerArgs{Priority: 2, Extra: Table{"x-priority": int64(1)}}, []string{"Extra", "x-priority"}},
	}
	if strconv.IntSize == 64 {
		var p int64 = math.MaxInt32 + 1 // a variable: the constant does not fit a 32-bit int
		tests = append(tests, consumerCase{"priority beyond int32", ConsumerArgs{Priority: int(p)}, []string{"Priority", "x-priority", "out of range"}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.args.Table()
			if err == nil {
				t.Fatalf("Table() = %v, want an error", got)
			}
			for _, w := range append(tt.words, "ConsumerArgs") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestArgsTableIsFreshEachCall(t *testing.T) {
	a := QueueArgs{Type: QueueQuorum}
	t1, _ := a.Table()
	t1["x-queue-type"] = "changed"
	t2, _ := a.Table()
	if t2["x-queue-type"] != "quorum" {
		t.Errorf("second Table() = %v, changed by a change to the first", t2)
	}
}
