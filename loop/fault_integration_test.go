package loop

import (
	"crypto/tls"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
)

// proxied returns a Config that reaches the broker through proxy p.
func proxied(t *testing.T, brokerURL string, p *faultproxy.Proxy) pika.Config {
	t.Helper()
	cfg, err := pika.ParseURL(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = p.Addr()
	return cfg
}

// brokerAddr returns host:port of the broker's URL.
func brokerAddr(t *testing.T, brokerURL string) string {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TLS connections take the fallback path and work end to end.
func TestIntegrationTLS(t *testing.T) {
	brokerURL := testenv.Broker(t)
	certs := faultproxy.GenerateCerts(t)
	p := faultproxy.NewTLS(t, brokerAddr(t, brokerURL), &tls.Config{Certificates: []tls.Certificate{certs.Server}})
	before := snapshot(t)
	cfg := proxied(t, brokerURL, p)
	cfg.TLS = &tls.Config{RootCAs: certs.CAPool, ServerName: "127.0.0.1"}
	q := testenv.Name(t, "loop-tls")
	var got string
	run(t, 20*time.Second, func(l *Loop, stop func()) {
		withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
			ch.QueueDeclare(q, pika.QueueDeclareOptions{}, nil)
			ch.ConfirmSelect(nil)
			ch.PublishConfirm("", q, pika.Message{Body: []byte("over TLS")}, func(err error) {
				if err != nil {
					t.Errorf("confirm: %v", err)
				}
				ch.Get(q, true, func(d *Delivery, ok bool, err error) {
					if ok {
						got = string(d.Body)
					}
					ch.QueueDelete(q, pika.QueueDeleteOptions{}, func(int, error) {
						c.Close(func(error) { stop() })
					})
				})
			})
		})
	})
	if got != "over TLS" {
		t.Errorf("got %q", got)
	}
	expectNoLeak(t, before)
}

// faultConns is how many connections the fault tests run on one loop.
const faultConns = 100

// openMany dials faultConns connections with one channel each through
// cfg, calling ready with them all once open.
func openMany(t *testing.T, l *Loop, cfg pika.Config, stop func(), ready func(conns []*Conn)) {
	var conns []*Conn
	for i := 0; i < faultConns; i++ {
		withChannel(t, l, cfg, stop, func(c *Conn, _ *Channel) {
			if conns = append(conns, c); len(conns) == faultConns {
				ready(conns)
			}
		})
	}
}

// A cut or a stall of every connection of a loop, recovery off: each
// connection reports its loss, with the network error for a cut
// and the heartbeat timeout for a stall; a refusing broker fails every
// dial. Nothing panics and nothing is left open.
func TestIntegrationFaultsOnManyConnections(t *testing.T) {
	brokerURL := testenv.Broker(t)
	for _, tc := range []struct {
		name  string
		fault func(p *faultproxy.Proxy)
		want  func(err error) bool
	}{
		{"cut", (*faultproxy.Proxy).Cut, func(err error) bool {
			return err != nil && !errors.Is(err, pika.ErrHeartbeatTimeout)
		}},
		{"stall", (*faultproxy.Proxy).Stall, func(err error) bool { return errors.Is(err, pika.ErrHeartbeatTimeout) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := faultproxy.New(t, brokerAddr(t, brokerURL))
			before := snapshot(t)
			cfg := proxied(t, brokerURL, p)
			cfg.Heartbeat = time.Second
			cfg.DisableRecovery = true
			lost := 0
			run(t, 30*time.Second, func(l *Loop, stop func()) {
				openMany(t, l, cfg, stop, func(conns []*Conn) {
					for _, c := range conns {
						c.OnClose(func(err error) {
							if !tc.want(err) {
								t.Errorf("connection lost with %v", err)
							}
							if lost++; lost == faultConns {
								stop()
							}
						})
					}
					tc.fault(p)
				})
			})
			p.Resume()
			if lost != faultConns {
				t.Errorf("%d of %d connections reported their loss", lost, faultConns)
			}
			p.Cut() // the stalled sockets
			expectNoLeak(t, before)
		})
	}
	t.Run("refuse", func(t *testing.T) {
		p := faultproxy.New(t, brokerAddr(t, brokerURL))
		p.Refuse(true)
		before := snapshot(t)
		cfg := proxied(t, brokerURL, p)
		failed := 0
		run(t, 30*time.Second, func(l *Loop, stop func()) {
			for i := 0; i < faultConns; i++ {
				l.DialConfig(cfg, func(c *Conn, err error) {
					if err == nil {
						t.Errorf("dial through a refusing proxy succeeded")
						c.Close(nil)
					}
					if failed++; failed == faultConns {
						stop()
					}
				})
			}
		})
		if failed != faultConns {
			t.Errorf("%d of %d dials failed", failed, faultConns)
		}
		expectNoLeak(t, before)
	})
}
