package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// closingHooks calls fn from the DisconnectHook and the RecoveryHook.
type closingHooks struct {
	fn func(what string)
}

func (h closingHooks) OnDisconnect(ev pika.DisconnectEvent) {
	h.fn(fmt.Sprint("disconnect ", ev.Conn.IsRecovering()))
}
func (h closingHooks) OnRecovery(_ *pika.Conn, ev pika.RecoveryEvent) { h.fn(ev.Kind.String()) }

// Close called from inside a hook of the recovery (the DisconnectHook of
// the lost link, a RecoveryHook at the loss, at an attempt, at the end of
// attempts) ends the Conn once, with nil: no attempt dials after it, no
// recovery event follows it, OnClose runs once, and the message whose
// confirmation the loss cut off resolves once, as unknown.
func TestCloseFromARecoveryHook(t *testing.T) {
	for _, at := range []string{"disconnect true", "lost", "attempt", "gave-up"} {
		t.Run(at, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair, func(p *peer) {
					p.handshake(0)
					p.openChannel(1)
					answer[*wire.ConfirmSelect](p, 1, &wire.ConfirmSelectOk{})
					expectPublish(p, 1)
					p.cut()
				})
				cfg.Reconnect = pika.Backoff{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond, MaxAttempts: 1}
				var closedFlag, lateDials atomic.Int32
				dial := cfg.Dial
				cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					if closedFlag.Load() != 0 {
						lateDials.Add(1)
					}
					return dial(ctx, network, addr)
				}
				var got []string
				var conn *Conn
				var stopLoop func()
				cfg.Hooks = []pika.Hook{closingHooks{func(what string) {
					if closedFlag.Load() != 0 {
						got = append(got, "hook after close: "+what)
						return
					}
					if what != at {
						return
					}
					closedFlag.Store(1)
					got = append(got, "close in "+what)
					conn.Close(func(err error) { got = append(got, fmt.Sprint("close cb ", err)) })
				}}}
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					stopLoop = stop
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						conn = c
						c.OnClose(func(err error) {
							got = append(got, fmt.Sprint("closed ", err))
							// Past any attempt the recovery might still make.
							l.AfterFunc(300*time.Millisecond, stopLoop)
						})
						ch.ConfirmSelect(nil)
						ch.PublishConfirm("", "q", pika.Message{Body: []byte("m1")}, func(err error) {
							got = append(got, fmt.Sprint("m1 unknown ", errors.Is(err, pika.ErrOutcomeUnknown)))
						})
					})
				})
				wait()
				want := []string{"close in " + at, "m1 unknown true", "closed <nil>", "close cb <nil>"}
				expectCalls(t, got, want)
				if n := lateDials.Load(); n != 0 {
					t.Errorf("%d dials after Close", n)
				}
			})
		})
	}
}
