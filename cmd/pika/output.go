package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// deliveryJSON is the --json form of a delivery: one object per line.
type deliveryJSON struct {
	Exchange     string          `json:"exchange"`
	RoutingKey   string          `json:"routing_key"`
	DeliveryTag  uint64          `json:"delivery_tag"`
	Redelivered  bool            `json:"redelivered"`
	ConsumerTag  string          `json:"consumer_tag,omitempty"`  // consume only
	MessageCount *uint32         `json:"message_count,omitempty"` // get only
	Properties   *propertiesJSON `json:"properties,omitempty"`
	Headers      map[string]any  `json:"headers,omitempty"`
	Body         string          `json:"body"`
	BodyEncoding string          `json:"body_encoding,omitempty"` // "base64" when the body is not UTF-8
}

// propertiesJSON holds the basic properties present on a message, headers
// aside.
type propertiesJSON struct {
	ContentType     string `json:"content_type,omitempty"`
	ContentEncoding string `json:"content_encoding,omitempty"`
	DeliveryMode    *uint8 `json:"delivery_mode,omitempty"`
	Priority        *uint8 `json:"priority,omitempty"`
	CorrelationID   string `json:"correlation_id,omitempty"`
	ReplyTo         string `json:"reply_to,omitempty"`
	Expiration      string `json:"expiration,omitempty"`
	MessageID       string `json:"message_id,omitempty"`
	Timestamp       *int64 `json:"timestamp,omitempty"` // unix seconds
	Type            string `json:"type,omitempty"`
	UserID          string `json:"user_id,omitempty"`
	AppID           string `json:"app_id,omitempty"`
	ClusterID       string `json:"cluster_id,omitempty"`
}

// toJSON converts d for --json output; get marks a basic.get result, which
// carries the count of messages left in the queue.
func toJSON(d *pika.Delivery, get bool) *deliveryJSON {
	out := &deliveryJSON{
		Exchange:    d.Exchange,
		RoutingKey:  d.RoutingKey,
		DeliveryTag: d.DeliveryTag,
		Redelivered: d.Redelivered,
		ConsumerTag: d.ConsumerTag,
	}
	if get {
		n := d.MessageCount
		out.MessageCount = &n
	}
	out.Properties = propsJSON(&d.Properties)
	if d.Headers != nil {
		out.Headers = tableJSON(d.Headers)
	}
	if utf8.Valid(d.Body) {
		out.Body = string(d.Body)
	} else {
		out.Body = base64.StdEncoding.EncodeToString(d.Body)
		out.BodyEncoding = "base64"
	}
	return out
}

// propsJSON returns the properties present in p, or nil when there are
// none (headers aside).
func propsJSON(p *pika.Properties) *propertiesJSON {
	var pj propertiesJSON
	present := false
	str := func(dst *string, v string, flag wire.PropertyFlags) {
		if v != "" || p.Flags&flag != 0 {
			*dst = v
			present = true
		}
	}
	str(&pj.ContentType, p.ContentType, wire.FlagContentType)
	str(&pj.ContentEncoding, p.ContentEncoding, wire.FlagContentEncoding)
	if p.DeliveryMode != 0 || p.Flags&wire.FlagDeliveryMode != 0 {
		v := p.DeliveryMode
		pj.DeliveryMode, present = &v, true
	}
	if p.Priority != 0 || p.Flags&wire.FlagPriority != 0 {
		v := p.Priority
		pj.Priority, present = &v, true
	}
	str(&pj.CorrelationID, p.CorrelationID, wire.FlagCorrelationID)
	str(&pj.ReplyTo, p.ReplyTo, wire.FlagReplyTo)
	str(&pj.Expiration, p.Expiration, wire.FlagExpiration)
	str(&pj.MessageID, p.MessageID, wire.FlagMessageID)
	if !p.Timestamp.IsZero() || p.Flags&wire.FlagTimestamp != 0 {
		var v int64
		if !p.Timestamp.IsZero() {
			v = p.Timestamp.Unix()
		}
		pj.Timestamp, present = &v, true
	}
	str(&pj.Type, p.Type, wire.FlagType)
	str(&pj.UserID, p.UserID, wire.FlagUserID)
	str(&pj.AppID, p.AppID, wire.FlagAppID)
	str(&pj.ClusterID, p.ClusterID, wire.FlagClusterID)
	if !present {
		return nil
	}
	return &pj
}

// tableJSON converts a field table to JSON values (see fieldJSON).
func tableJSON(t pika.Table) map[string]any {
	m := make(map[string]any, len(t))
	for k, v := range t {
		m[k] = fieldJSON(v)
	}
	return m
}

// fieldJSON converts a field value to a JSON value: numbers and booleans
// as such (NaN and infinities as strings), strings as strings, byte arrays
// as base64 strings, timestamps as RFC 3339 strings, decimals as decimal
// strings ("12.34"), tables as objects, arrays as arrays, void as null.
func fieldJSON(v any) any {
	switch v := v.(type) {
	case float32:
		return floatJSON(float64(v))
	case float64:
		return floatJSON(v)
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339)
	case pika.Decimal:
		return decimalString(v)
	case pika.Table:
		return tableJSON(v)
	case map[string]any:
		return tableJSON(v)
	case []any:
		a := make([]any, len(v))
		for i, x := range v {
			a[i] = fieldJSON(x)
		}
		return a
	}
	return v
}

func floatJSON(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

// decimalString renders an AMQP decimal, Value × 10^-Scale, exactly.
func decimalString(d pika.Decimal) string {
	neg := d.Value < 0
	abs := int64(d.Value)
	if neg {
		abs = -abs
	}
	digits := strconv.FormatInt(abs, 10)
	if s := int(d.Scale); s > 0 {
		if len(digits) <= s {
			digits = string(bytes.Repeat([]byte("0"), s-len(digits)+1)) + digits
		}
		digits = digits[:len(digits)-s] + "." + digits[len(digits)-s:]
	}
	if neg {
		digits = "-" + digits
	}
	return digits
}

// jsonWriter writes one JSON value per line.
type jsonWriter struct {
	enc *json.Encoder
}

func newJSONWriter(w io.Writer) *jsonWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &jsonWriter{enc: enc}
}

func (j *jsonWriter) write(v any) error { return j.enc.Encode(v) }
