package loop

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the log handler.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// With a Logger at Debug level every frame in and out is logged, decoded,
// and the SASL response (the password) is not.
func TestFrameLogging(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.closeConn()
		})
		cfg.Password = "s3cret-password"
		var out syncBuffer
		cfg.Logger = slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			l.DialConfig(cfg, func(c *Conn, err error) {
				if err != nil {
					t.Errorf("dial: %v", err)
					stop()
					return
				}
				c.Close(func(error) { stop() })
			})
		})
		wait()
		log := out.String()
		for _, want := range []string{
			"dir=send type=protocol-header",
			"dir=recv type=method channel=0 method=connection.start",
			"dir=send type=method channel=0 method=connection.start-ok",
			"dir=recv type=method channel=0 method=connection.open-ok",
			"dir=send type=method channel=0 method=connection.close",
			"dir=recv type=method channel=0 method=connection.close-ok",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("the log lacks %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "s3cret-password") {
			t.Errorf("the log holds the password:\n%s", log)
		}
	})
}
