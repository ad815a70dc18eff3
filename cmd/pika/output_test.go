package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

func TestDeliveryJSON(t *testing.T) {
	d := &pika.Delivery{
		ConsumerTag: "ctag", DeliveryTag: 7, Redelivered: true, Exchange: "ex", RoutingKey: "rk",
		Properties: pika.Properties{
			ContentType: "text/plain", ContentEncoding: "utf-8", DeliveryMode: 2, Priority: 0,
			CorrelationID: "c", ReplyTo: "r", Expiration: "1000", MessageID: "m",
			Timestamp: time.Unix(1700000000, 0), Type: "t", UserID: "u", AppID: "a", ClusterID: "cl",
			Flags: wire.FlagPriority,
			Headers: pika.Table{
				"s": "str", "i": int64(-3), "u8": uint8(200), "b": true, "f": 1.5, "nan": math.NaN(),
				"bytes": []byte{0xff, 0}, "ts": time.Unix(0, 0).UTC(), "dec": pika.Decimal{Scale: 2, Value: -1234},
				"nested": pika.Table{"x": int32(1)}, "arr": []any{"a", int16(2), nil}, "void": nil,
			},
		},
		Body: []byte(`{"k":"<v>"}`),
	}
	var buf bytes.Buffer
	if err := newJSONWriter(&buf).write(toJSON(d, false)); err != nil {
		t.Fatal(err)
	}
	want := `{"exchange":"ex","routing_key":"rk","delivery_tag":7,"redelivered":true,"consumer_tag":"ctag",` +
		`"properties":{"content_type":"text/plain","content_encoding":"utf-8","delivery_mode":2,"priority":0,` +
		`"correlation_id":"c","reply_to":"r","expiration":"1000","message_id":"m","timestamp":1700000000,` +
		`"type":"t","user_id":"u","app_id":"a","cluster_id":"cl"},` +
		`"headers":{"arr":["a",2,null],"b":true,"bytes":"/wA=","dec":"-12.34","f":1.5,"i":-3,"nan":"NaN",` +
		`"nested":{"x":1},"s":"str","ts":"1970-01-01T00:00:00Z","u8":200,"void":null},` +
		`"body":"{\"k\":\"<v>\"}"}` + "\n"
	if buf.String() != want {
		t.Errorf("JSON =\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestDeliveryJSONMinimal(t *testing.T) {
	// A get result with no properties and a binary body.
	d := &pika.Delivery{DeliveryTag: 1, RoutingKey: "q", MessageCount: 0, Body: []byte{0xc3, 0x28, 'a'}}
	var buf bytes.Buffer
	if err := newJSONWriter(&buf).write(toJSON(d, true)); err != nil {
		t.Fatal(err)
	}
	want := `{"exchange":"","routing_key":"q","delivery_tag":1,"redelivered":false,"message_count":0,"body":"wyhh","body_encoding":"base64"}` + "\n"
	if buf.String() != want {
		t.Errorf("JSON =\n%s\nwant\n%s", buf.String(), want)
	}
	// The output is one valid JSON object per line.
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	// An empty body is an empty string, without body_encoding.
	buf.Reset()
	newJSONWriter(&buf).write(toJSON(&pika.Delivery{}, false))
	if !strings.Contains(buf.String(), `"body":""}`) {
		t.Errorf("empty body: %s", buf.String())
	}
}

func TestPropsJSONPresentButEmpty(t *testing.T) {
	// Properties present on the wire with empty values still show.
	p := &pika.Properties{Flags: wire.FlagContentType | wire.FlagDeliveryMode | wire.FlagTimestamp}
	pj := propsJSON(p)
	if pj == nil || pj.DeliveryMode == nil || *pj.DeliveryMode != 0 || pj.Timestamp == nil || *pj.Timestamp != 0 {
		t.Fatalf("propsJSON = %+v", pj)
	}
	b, _ := json.Marshal(pj)
	if string(b) != `{"delivery_mode":0,"timestamp":0}` {
		// content_type "" is omitted by omitempty: JSON cannot tell it
		// from absent, which is accepted.
		t.Errorf("JSON = %s", b)
	}
}

func TestDecimalString(t *testing.T) {
	tests := []struct {
		d    pika.Decimal
		want string
	}{
		{pika.Decimal{Scale: 0, Value: 5}, "5"},
		{pika.Decimal{Scale: 2, Value: 1234}, "12.34"},
		{pika.Decimal{Scale: 2, Value: 5}, "0.05"},
		{pika.Decimal{Scale: 3, Value: -5}, "-0.005"},
		{pika.Decimal{Scale: 1, Value: math.MinInt32}, "-214748364.8"},
		{pika.Decimal{Scale: 12, Value: 1}, "0.000000000001"},
	}
	for _, tt := range tests {
		if got := decimalString(tt.d); got != tt.want {
			t.Errorf("decimalString(%+v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
