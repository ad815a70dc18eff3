package loop

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Posted functions run on the loop goroutine in order per poster, timers
// run in deadline order, and a stopped timer never runs.
func TestPostAndTimers(t *testing.T) {
	before := snapshot(t)
	var got []int
	var timers []string
	const posters, each = 8, 200
	var wg sync.WaitGroup
	run(t, 10*time.Second, func(l *Loop, stop func()) {
		l.AfterFunc(30*time.Millisecond, func() { timers = append(timers, "30ms") })
		stopped := l.AfterFunc(10*time.Millisecond, func() { timers = append(timers, "stopped") })
		l.AfterFunc(10*time.Millisecond, func() { timers = append(timers, "10ms") })
		reset := l.AfterFunc(time.Hour, func() { timers = append(timers, "reset to 20ms") })
		if !stopped.Stop() || stopped.Stop() {
			t.Errorf("Stop: want true then false")
		}
		reset.Reset(20 * time.Millisecond)
		for p := 0; p < posters; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					v := p*each + i
					if !l.Post(func() { got = append(got, v) }) {
						t.Errorf("Post refused while running")
					}
				}
			}()
		}
		go func() {
			wg.Wait()
			l.Post(func() {
				l.AfterFunc(40*time.Millisecond, stop)
			})
		}()
	})
	if len(got) != posters*each {
		t.Fatalf("%d posted functions ran, want %d", len(got), posters*each)
	}
	last := make([]int, posters)
	for i := range last {
		last[i] = -1
	}
	for _, v := range got {
		p := v / each
		if v <= last[p] {
			t.Fatalf("poster %d: %d ran after %d", p, v, last[p])
		}
		last[p] = v
	}
	if want := []string{"10ms", "reset to 20ms", "30ms"}; !slices.Equal(timers, want) {
		t.Errorf("timers ran %q, want %q", timers, want)
	}
	expectNoLeak(t, before)
}

// After Run returns, Post refuses and a second Run fails.
func TestRunOnce(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	if l.Post(func() { t.Error("ran after Run returned") }) {
		t.Error("Post after Run returned: true")
	}
	if err := l.Run(context.Background()); err == nil {
		t.Error("second Run: no error")
	}
}

// Dial errors reach the callback, never inside the Dial call.
func TestDialErrors(t *testing.T) {
	before := snapshot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	var got []string
	run(t, 10*time.Second, func(l *Loop, stop func()) {
		pending := 4
		done := func(name string, err error, want error) {
			got = append(got, name)
			if err == nil || want != nil && !errors.Is(err, want) {
				t.Errorf("%s: %v, want %v", name, err, want)
			}
			if pending--; pending == 0 {
				stop()
			}
		}
		inCall := true
		l.Dial("amqp://h:notaport/", func(c *Conn, err error) {
			if inCall {
				t.Error("callback ran inside Dial")
			}
			done("bad url", err, pika.ErrBadURL)
		})
		l.DialConfig(pika.Config{SecretRefresh: time.Second},
			func(c *Conn, err error) { done("refresh without credentials", err, errSecretRefreshNeedsCredentials) })
		vaultDown := errors.New("vault down")
		l.DialConfig(pika.Config{Addr: refused, Credentials: func(context.Context) (string, string, error) { return "", "", vaultDown }},
			func(c *Conn, err error) { done("credentials fail", err, vaultDown) })
		l.DialConfig(pika.Config{Addr: refused}, func(c *Conn, err error) { done("refused", err, nil) })
		inCall = false
	})
	if len(got) != 4 {
		t.Errorf("callbacks: %q", got)
	}
	expectNoLeak(t, before)
}

// A broker that refuses the login fails the dial with ErrAuthentication.
func TestDialAuthenticationRefused(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			hdr := make([]byte, 8)
			p.nc.Read(hdr)
			p.send(scripted.Method(0, &wire.ConnectionStart{VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN", Locales: "en_US"}))
			expect[*wire.ConnectionStartOk](p, 0)
			p.send(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 403, ReplyText: "ACCESS_REFUSED - Login was refused"}))
			expect[*wire.ConnectionCloseOk](p, 0)
		})
		var dialErr error
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			l.DialConfig(cfg, func(c *Conn, err error) {
				dialErr = err
				stop()
			})
		})
		wait()
		if !errors.Is(dialErr, pika.ErrAuthentication) {
			t.Errorf("dial: %v, want ErrAuthentication", dialErr)
		}
	})
}

// Ending Run with connections open and requests pending fails them all
// with ErrStopped and releases every goroutine and descriptor.
func TestRunEndAbortsConnections(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			expect[*wire.QueueDeclare](p, 1)
			// never answered; the client goes away.
			buf := make([]byte, 64)
			p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, err := p.nc.Read(buf); err != nil {
					return
				}
			}
		})
		var declErr, closeErr error
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnClose(func(err error) { closeErr = err })
				ch.QueueDeclare("q", pika.QueueDeclareOptions{}, func(_ pika.Queue, err error) { declErr = err })
				l.AfterFunc(50*time.Millisecond, stop)
			})
		})
		wait()
		if !errors.Is(declErr, ErrStopped) || !errors.Is(closeErr, ErrStopped) {
			t.Errorf("declare: %v, close: %v; want ErrStopped", declErr, closeErr)
		}
	})
}

// The loop sends heartbeats on an idle connection and declares a silent
// broker dead after two intervals.
func TestHeartbeats(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		beats := 0
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(1)
			// Silent from now on; count the client's heartbeats.
			for {
				s := p.nextOrEOF()
				if s == nil {
					return
				}
				if s.Type == wire.FrameHeartbeat {
					beats++
				}
			}
		})
		cfg.Heartbeat = 0 // accept the peer's 1 s
		var closeErr error
		start := time.Now()
		var lasted time.Duration
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			l.DialConfig(cfg, func(c *Conn, err error) {
				if err != nil {
					t.Errorf("dial: %v", err)
					stop()
					return
				}
				c.OnClose(func(err error) {
					closeErr = err
					lasted = time.Since(start)
					stop()
				})
			})
		})
		wait()
		if !errors.Is(closeErr, pika.ErrHeartbeatTimeout) {
			t.Errorf("close: %v, want ErrHeartbeatTimeout", closeErr)
		}
		if beats < 2 {
			t.Errorf("%d heartbeats sent in %v, want at least 2 (one per half interval)", beats, lasted)
		}
	})
}

// A handshake that fails on one address (the peer hangs up) moves on to
// the next address, like pika.DialConfig; a refused login does not (see
// TestDialAuthenticationRefused).
func TestDialNextAddressAfterAFailedHandshake(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		badClient, badServer := pair(t)
		go func() {
			hdr := make([]byte, 8)
			badServer.Read(hdr)
			badServer.Close()
		}()
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.closeConn()
		})
		good := cfg.Dial
		var dialed []string
		cfg.Addrs = []string{"bad:5672", "good:5672"}
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, addr) // the dial goroutines run one after the other
			if addr == "bad:5672" {
				return badClient, nil
			}
			return good(ctx, network, addr)
		}
		var dialErr error
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			l.DialConfig(cfg, func(c *Conn, err error) {
				dialErr = err
				if err != nil {
					stop()
					return
				}
				c.Close(func(error) { stop() })
			})
		})
		wait()
		if dialErr != nil {
			t.Errorf("dial: %v", dialErr)
		}
		if !slices.Equal(dialed, []string{"bad:5672", "good:5672"}) {
			t.Errorf("dialed %q", dialed)
		}
	})
}
