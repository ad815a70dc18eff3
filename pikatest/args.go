package pikatest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pika-go/pika/pikatest/internal/route"
	"github.com/pika-go/pika/wire"
)

// inequivalent is RabbitMQ's error for a redeclaration whose property
// differs from the existing entity's.
func inequivalent(arg, what string, received, current any) *amqpError {
	return chanErr(wire.ReplyPreconditionFailed, "inequivalent arg '%s' for %s: received '%v' but current is '%v'", arg, what, received, current)
}

// checkArgsEquivalent compares one x-argument of a redeclaration with the
// existing entity's, with RabbitMQ's text when they differ.
func checkArgsEquivalent(what string, received, current wire.Table, key string) *amqpError {
	r, rok := received[key]
	c, cok := current[key]
	if !rok && !cok {
		return nil
	}
	if rok && cok && route.ValuesEqual(r, c) {
		return nil
	}
	if rok && cok {
		return chanErr(wire.ReplyPreconditionFailed, "inequivalent arg '%s' for %s: received '%s' but current is '%s'",
			key, what, showValue(r), showValue(c))
	}
	desc := func(v any, ok bool) string {
		if !ok {
			return "none"
		}
		return fmt.Sprintf("the value '%s' of type '%s'", showValue(v), typeName(v))
	}
	return chanErr(wire.ReplyPreconditionFailed, "inequivalent arg '%s' for %s: received %s but current is %s",
		key, what, desc(r, rok), desc(c, cok))
}

// typeName returns RabbitMQ's name for the field type of v.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "longstr"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int64, int, uint64:
		return "long"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case bool:
		return "bool"
	case float32:
		return "float"
	case float64:
		return "double"
	case wire.Decimal:
		return "decimal"
	case time.Time:
		return "timestamp"
	case wire.Table:
		return "table"
	case []any:
		return "array"
	case []byte:
		return "binary"
	case nil:
		return "void"
	}
	return fmt.Sprintf("%T", v)
}

// showValue formats a field value as RabbitMQ prints it in error texts.
func showValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return "undefined"
	}
	return fmt.Sprint(v)
}

// erlangValue formats a value as Erlang prints it: binaries as <<"...">>.
func erlangValue(v any) string {
	switch x := v.(type) {
	case string:
		return `<<"` + x + `">>`
	case []byte:
		return `<<"` + string(x) + `">>`
	}
	return showValue(v)
}

// erlangBinary formats bytes as Erlang prints a binary: <<1,2,3>>, cut
// after 64 bytes.
func erlangBinary(b []byte) string {
	var sb strings.Builder
	sb.WriteString("<<")
	for i, x := range b {
		if i == 64 {
			sb.WriteString(",...")
			break
		}
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(int(x)))
	}
	sb.WriteString(">>")
	return sb.String()
}

// replyText cuts a reply text to the 255 bytes a short string holds,
// ending in "..." as RabbitMQ does.
func replyText(s string) string {
	if len(s) <= 255 {
		return s
	}
	return s[:252] + "..."
}
