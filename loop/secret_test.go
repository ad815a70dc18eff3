package loop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// warnings records the messages logged at Warn level and above.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
	w.msgs = append(w.msgs, msg)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// Config.Credentials gives the login, on a goroutine other than the
// loop's; Config.SecretRefresh hands a fresh password to the broker with
// connection.update-secret at each tick (a failed Credentials call is
// logged and the next tick tries again), and stops when the connection
// closes.
func TestCredentialsAndSecretRefresh(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		var updates []string
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			so := p.handshake(0)
			if so.Mechanism != "PLAIN" || so.Response != "\x00user-1\x00token-1" {
				t.Errorf("login %s %q, want PLAIN with user-1 and token-1", so.Mechanism, so.Response)
			}
			for {
				switch m := p.method(0).(type) {
				case *wire.ConnectionUpdateSecret:
					updates = append(updates, m.NewSecret+" "+m.Reason)
					p.send(scripted.Method(0, &wire.ConnectionUpdateSecretOk{}))
				case *wire.ConnectionClose:
					p.send(scripted.Method(0, &wire.ConnectionCloseOk{}))
					return
				default:
					t.Errorf("peer: unexpected %s", m.ID())
				}
			}
		})
		var (
			mu       sync.Mutex
			calls    int
			onLoop   int
			loopGoid string
		)
		cfg.Credentials = func(ctx context.Context) (string, string, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if goid() == loopGoid {
				onLoop++
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("Credentials call %d: ctx without deadline", calls)
			}
			if calls == 3 {
				return "", "", errors.New("vault sealed")
			}
			return fmt.Sprint("user-", calls), fmt.Sprint("token-", calls), nil
		}
		cfg.SecretRefresh = 20 * time.Millisecond
		warns := &warnings{}
		cfg.Logger = slog.New(warns)
		var callsAtClose int
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			loopGoid = goid()
			l.DialConfig(cfg, func(c *Conn, err error) {
				if err != nil {
					t.Errorf("dial: %v", err)
					stop()
					return
				}
				waitFor(l, func() bool { return c.sec.secret == "token-4" }, func() {
					c.Close(func(err error) {
						mu.Lock()
						callsAtClose = calls
						mu.Unlock()
						// Ticks that would come now must not call Credentials.
						l.AfterFunc(100*time.Millisecond, stop)
					})
				})
			})
		})
		wait()
		want := []string{"token-2 pika: Config.SecretRefresh", "token-4 pika: Config.SecretRefresh"}
		if len(updates) < 2 || !slices.Equal(updates[:2], want) {
			t.Errorf("update-secret %q, want %q first", updates, want)
		}
		mu.Lock()
		defer mu.Unlock()
		if onLoop > 0 {
			t.Errorf("Credentials ran %d times on the loop's goroutine", onLoop)
		}
		if calls != callsAtClose {
			t.Errorf("Credentials called %d times after Close", calls-callsAtClose)
		}
		warns.mu.Lock()
		defer warns.mu.Unlock()
		if len(warns.msgs) != 1 || !strings.Contains(warns.msgs[0], "vault sealed") {
			t.Errorf("warnings %q, want the failed refresh", warns.msgs)
		}
	})
}

// UpdateSecret reports the broker's refusal (a connection.close) and a
// closed connection's error to its callback.
func TestUpdateSecretRefused(t *testing.T) {
	cfg, wait := scriptedConfig(t, socketPair, func(p *peer) {
		p.handshake(0)
		expect[*wire.ConnectionUpdateSecret](p, 0)
		p.send(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 530, ReplyText: "NOT_ALLOWED - update-secret refused", ClassID: 10, MethodID: 70}))
		expect[*wire.ConnectionCloseOk](p, 0)
	})
	var got []string
	run(t, 10*time.Second, func(l *Loop, stop func()) {
		l.DialConfig(cfg, func(c *Conn, err error) {
			if err != nil {
				t.Errorf("dial: %v", err)
				stop()
				return
			}
			c.UpdateSecret("s2", "test", func(err error) {
				got = append(got, fmt.Sprint("refused: ", errors.Is(err, pika.ErrNotAllowed)))
				c.UpdateSecret("s3", "after", func(err error) {
					got = append(got, fmt.Sprint("after close: ", err != nil))
					stop()
				})
			})
		})
	})
	wait()
	expectCalls(t, got, []string{"refused: true", "after close: true"})
}

// waitFor runs then on the loop once cond holds, checking it every few
// milliseconds.
func waitFor(l *Loop, cond func() bool, then func()) {
	if cond() {
		then()
		return
	}
	l.AfterFunc(5*time.Millisecond, func() { waitFor(l, cond, then) })
}
