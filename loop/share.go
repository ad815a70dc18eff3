package loop

import (
	"reflect"

	"github.com/pika-go/pika"
)

// What the connections of a Loop share instead of holding a copy each:
// most of what an idle connection keeps is the same for every connection
// dialed with one Config to one broker (see "I/O paths" in the package
// documentation for the memory of an idle connection).

// shareConfig returns the Config a new Conn keeps: the one an earlier Conn
// of the loop keeps when cfg is the same field by field (see sameShallow),
// so that many connections dialed with one Config keep one copy (recovery
// keeps it for reconnecting); otherwise cfg, which later Conns may then
// share. A Conn never modifies its Config once dialing starts.
func (l *Loop) shareConfig(cfg *pika.Config) *pika.Config {
	if l.cfg != nil && sameShallow(reflect.ValueOf(l.cfg).Elem(), reflect.ValueOf(cfg).Elem()) {
		return l.cfg
	}
	l.cfg = cfg
	return cfg
}

// sameShallow reports whether a and b, of the same type, are the same
// value without looking behind references: pointers, maps, channels and
// slices are the same when they refer to the same memory (slices of the
// same length), functions only when both are nil (two closures cannot be
// told apart), strings and numbers by value, structs, arrays and
// interfaces field by field. It errs only towards "not the same".
func sameShallow(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Func:
		return a.IsNil() && b.IsNil()
	case reflect.Pointer, reflect.Map, reflect.Chan, reflect.UnsafePointer:
		return a.UnsafePointer() == b.UnsafePointer()
	case reflect.Slice:
		return a.IsNil() == b.IsNil() && a.Len() == b.Len() && a.UnsafePointer() == b.UnsafePointer()
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() && b.IsNil()
		}
		a, b = a.Elem(), b.Elem()
		return a.Type() == b.Type() && sameShallow(a, b)
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameShallow(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Array:
		for i := range a.Len() {
			if !sameShallow(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.Float32, reflect.Float64:
		return a.Float() == b.Float()
	case reflect.Complex64, reflect.Complex128:
		return a.Complex() == b.Complex()
	}
	return false
}

// shareServerProperties makes c, just open, share the server-properties
// table of the loop's earlier connections when its broker sent the same.
func (c *Conn) shareServerProperties() {
	if !c.eng.ShareServerProperties(c.l.server) {
		c.l.server = c.eng.ServerProperties()
	}
}
