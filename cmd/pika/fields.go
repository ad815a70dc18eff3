package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// fieldTypes are the value types of --header and --arg, for messages.
const fieldTypes = "string, int, float, bool"

// parseField parses a --header or --arg value: KEY=VALUE, or KEY:TYPE=VALUE
// with TYPE one of string, int (64-bit signed), float (64-bit) and bool
// (true/false/1/0). Without a type, VALUE is a string, or, when infer is
// set, an int when it is a decimal integer, a bool when it is "true" or
// "false", and a string otherwise. A key that contains ':' needs an
// explicit type ("a:b:string=v").
func parseField(spec string, infer bool) (key string, value any, err error) {
	left, val, ok := strings.Cut(spec, "=")
	if !ok {
		return "", nil, fmt.Errorf("%q: want KEY=VALUE or KEY:TYPE=VALUE", spec)
	}
	key, typ, typed := left, "", false
	if i := strings.LastIndexByte(left, ':'); i >= 0 {
		key, typ, typed = left[:i], left[i+1:], true
	}
	if key == "" {
		return "", nil, fmt.Errorf("%q: empty key", spec)
	}
	if !typed {
		if infer {
			if n, err := strconv.ParseInt(val, 10, 64); err == nil {
				return key, n, nil
			}
			if val == "true" || val == "false" {
				return key, val == "true", nil
			}
		}
		return key, val, nil
	}
	switch typ {
	case "string", "str":
		return key, val, nil
	case "int":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%q: %q is not a 64-bit integer", spec, val)
		}
		return key, n, nil
	case "float":
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%q: %q is not a number", spec, val)
		}
		return key, f, nil
	case "bool":
		b, err := strconv.ParseBool(val)
		if err != nil {
			return "", nil, fmt.Errorf("%q: %q is not a boolean (true, false, 1, 0)", spec, val)
		}
		return key, b, nil
	}
	return "", nil, fmt.Errorf("%q: unknown type %q (types: %s; a key containing ':' needs an explicit type, as in a:b:string=v)", spec, typ, fieldTypes)
}

// parseTable parses every spec into a table; nil when there are none. A
// key given twice is an error.
func parseTable(flagName string, specs []string, infer bool) (pika.Table, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	t := make(pika.Table, len(specs))
	for _, s := range specs {
		k, v, err := parseField(s, infer)
		if err != nil {
			return nil, fmt.Errorf("--%s %v", flagName, err)
		}
		if _, dup := t[k]; dup {
			return nil, fmt.Errorf("--%s: key %q given twice", flagName, k)
		}
		t[k] = v
	}
	return t, nil
}

// propFlags are the flags for the basic properties of a published message.
type propFlags struct {
	contentType, contentEncoding, deliveryMode, priority     string
	correlationID, replyTo, expiration, messageID, timestamp string
	typ, userID, appID, clusterID                            string
	headers                                                  multiFlag
}

// define adds the property flags to fs.
func (p *propFlags) define(fs *flag.FlagSet) {
	fs.Var(&p.headers, "header", "header KEY=VALUE (repeatable)")
	fs.StringVar(&p.contentType, "content-type", "", "content type")
	fs.StringVar(&p.contentEncoding, "content-encoding", "", "content encoding")
	fs.StringVar(&p.deliveryMode, "delivery-mode", "", "1|2|transient|persistent")
	fs.StringVar(&p.priority, "priority", "", "priority 0..255")
	fs.StringVar(&p.correlationID, "correlation-id", "", "correlation id")
	fs.StringVar(&p.replyTo, "reply-to", "", "reply-to")
	fs.StringVar(&p.expiration, "expiration", "", "expiration (ms)")
	fs.StringVar(&p.messageID, "message-id", "", "message id")
	fs.StringVar(&p.timestamp, "timestamp", "", "unix seconds, RFC 3339, or now")
	fs.StringVar(&p.typ, "type", "", "message type")
	fs.StringVar(&p.userID, "user-id", "", "user id")
	fs.StringVar(&p.appID, "app-id", "", "application id")
	fs.StringVar(&p.clusterID, "cluster-id", "", "cluster id")
}

// properties builds the message properties; now is the time for
// --timestamp now.
func (p *propFlags) properties(now time.Time) (pika.Properties, error) {
	props := pika.Properties{
		ContentType:     p.contentType,
		ContentEncoding: p.contentEncoding,
		CorrelationID:   p.correlationID,
		ReplyTo:         p.replyTo,
		Expiration:      p.expiration,
		MessageID:       p.messageID,
		Type:            p.typ,
		UserID:          p.userID,
		AppID:           p.appID,
		ClusterID:       p.clusterID,
	}
	var err error
	if props.Headers, err = parseTable("header", p.headers, false); err != nil {
		return props, err
	}
	if p.deliveryMode != "" {
		if props.DeliveryMode, err = parseDeliveryMode(p.deliveryMode); err != nil {
			return props, err
		}
	}
	if p.priority != "" {
		n, err := strconv.ParseUint(p.priority, 10, 8)
		if err != nil {
			return props, fmt.Errorf("--priority %q: want an integer from 0 to 255", p.priority)
		}
		props.Priority = uint8(n)
		props.Flags |= wire.FlagPriority // priority 0 is sent too
	}
	if p.timestamp != "" {
		if props.Timestamp, err = parseTimestamp(p.timestamp, now); err != nil {
			return props, err
		}
	}
	return props, nil
}

// parseDeliveryMode parses --delivery-mode.
func parseDeliveryMode(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "1", "transient", "non-persistent":
		return pika.Transient, nil
	case "2", "persistent":
		return pika.Persistent, nil
	}
	return 0, fmt.Errorf("--delivery-mode %q: want 1, 2, transient or persistent", s)
}

// parseTimestamp parses --timestamp: "now", whole unix seconds, or an RFC
// 3339 time (truncated to the second, as AMQP timestamps are).
func parseTimestamp(s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now.Truncate(time.Second), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt64/int64(time.Second) {
			return time.Time{}, fmt.Errorf("--timestamp %q: unix seconds out of range", s)
		}
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--timestamp %q: want unix seconds, an RFC 3339 time (2006-01-02T15:04:05Z) or now", s)
	}
	if t.Before(time.Unix(0, 0)) {
		return time.Time{}, fmt.Errorf("--timestamp %q: before 1970 cannot be sent", s)
	}
	return t.Truncate(time.Second), nil
}
