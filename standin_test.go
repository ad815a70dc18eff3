package pika

import (
	"context"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/standin"
)

type fakeView struct {
	closed bool
	queue  string
}

func (v *fakeView) IsClosed() bool            { return v.closed }
func (v *fakeView) Err() error                { return nil }
func (v *fakeView) IsRecovering() bool        { return false }
func (v *fakeView) IsBlocked() (bool, string) { return true, "low on memory" }
func (v *fakeView) ServerProperties() Table   { return Table{"product": "loop"} }
func (v *fakeView) Tuning() Tuning            { return Tuning{FrameMax: 4096} }
func (v *fakeView) LocalAddr() net.Addr       { return &net.TCPAddr{Port: 1} }
func (v *fakeView) RemoteAddr() net.Addr      { return &net.TCPAddr{Port: 5672} }
func (v *fakeView) Queue() string             { return v.queue }

// The accessors of a stand-in answer for the loop's value.
func TestStandInAccessors(t *testing.T) {
	v := &fakeView{queue: "amq.gen-1"}
	c := standin.NewConn(v).(*Conn)
	ch := standin.NewChannel(c, 7, v).(*Channel)
	cons := standin.NewConsumer(ch, "ctag", v).(*Consumer)
	d := standin.NewDelivery(ch).(*Delivery)
	if c.IsClosed() || c.Err() != nil || ch.IsClosed() || ch.Err() != nil {
		t.Errorf("stand-ins of open values report closed")
	}
	v.closed = true
	if !c.IsClosed() || !ch.IsClosed() {
		t.Errorf("stand-ins of closed values report open")
	}
	if b, r := c.IsBlocked(); !b || r != "low on memory" {
		t.Errorf("IsBlocked %v %q", b, r)
	}
	if c.RemoteAddr().(*net.TCPAddr).Port != 5672 || c.LocalAddr().(*net.TCPAddr).Port != 1 ||
		c.ServerProperties()["product"] != "loop" || c.Tuning().FrameMax != 4096 {
		t.Errorf("connection accessors do not answer for the view")
	}
	if ch.ID() != 7 || ch.Conn() != c || cons.Channel() != ch || cons.Tag() != "ctag" || d.Channel() != ch {
		t.Errorf("identity accessors are wrong")
	}
	// The consumer's queue is the loop consumer's as it is now.
	if q := cons.Queue(); q != "amq.gen-1" {
		t.Errorf("Queue %q, want amq.gen-1", q)
	}
	v.queue = "amq.gen-2"
	if q := cons.Queue(); q != "amq.gen-2" {
		t.Errorf("Queue after a rename %q, want amq.gen-2", q)
	}
}

// Every other method of a stand-in fails (or does nothing) without a panic
// and without waiting: each is called by reflection with zero arguments, a
// context and callbacks that do nothing.
func TestStandInMethodsNeverPanic(t *testing.T) {
	v := &fakeView{}
	c := standin.NewConn(v).(*Conn)
	ch := standin.NewChannel(c, 1, v).(*Channel)
	cons := standin.NewConsumer(ch, "ctag", v).(*Consumer)
	d := standin.NewDelivery(ch).(*Delivery)
	ctxType := reflect.TypeFor[context.Context]()
	errType := reflect.TypeFor[error]()
	for _, recv := range []any{c, ch, cons, d} {
		rv := reflect.ValueOf(recv)
		for i := 0; i < rv.NumMethod(); i++ {
			m := rv.Type().Method(i)
			name := rv.Type().Elem().Name() + "." + m.Name
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				ft := rv.Method(i).Type()
				args := make([]reflect.Value, ft.NumIn())
				for j := range args {
					at := ft.In(j)
					switch {
					case at == ctxType:
						args[j] = reflect.ValueOf(ctx)
					case at.Kind() == reflect.Func:
						args[j] = reflect.MakeFunc(at, func([]reflect.Value) []reflect.Value {
							out := make([]reflect.Value, at.NumOut())
							for k := range out {
								out[k] = reflect.Zero(at.Out(k))
							}
							return out
						})
					default:
						args[j] = reflect.Zero(at)
					}
				}
				done := make(chan []reflect.Value, 1)
				go func() {
					defer func() {
						if p := recover(); p != nil {
							t.Errorf("panic: %v", p)
							done <- nil
						}
					}()
					done <- rv.Method(i).Call(args)
				}()
				var out []reflect.Value
				select {
				case out = <-done:
				case <-ctx.Done():
					t.Fatalf("did not return")
				}
				if ctx.Err() != nil {
					t.Errorf("waited for its context")
				}
				for _, o := range out {
					if o.Type() == errType && !o.IsNil() {
						if err := o.Interface().(error); !errors.Is(err, errStandIn) && !errors.Is(err, ErrNoAcknowledger) &&
							!errors.Is(err, ErrNotConfirmMode) {
							t.Logf("error %v", err)
						}
					}
				}
			})
		}
	}
}
