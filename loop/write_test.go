package loop

import (
	"net"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// A burst larger than the socket takes is kept and written as the peer
// reads (the descriptor path's partial writes and writability events);
// Buffered counts it and comes back to zero; nothing is lost or reordered.
func TestBurstLargerThanTheSocket(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		const msgs, size = 64, 64 << 10
		got := 0
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			time.Sleep(200 * time.Millisecond) // let the client's socket fill up
			for got < msgs {
				expect[*wire.BasicPublish](p, 1)
				h := p.next()
				if h.Header == nil || h.Header.BodySize != size {
					t.Errorf("message %d: header %v", got, h)
					return
				}
				for n := 0; n < size; {
					b := p.next()
					if b.Type != wire.FrameBody {
						t.Errorf("message %d: %v instead of a body frame", got, b)
						return
					}
					if len(b.Payload) > 0 && b.Payload[0] != byte(got) {
						t.Errorf("message %d: body of message %d", got, b.Payload[0])
					}
					n += len(b.Payload)
				}
				got++
			}
			p.closeConn()
		})
		var peak, after int
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				body := make([]byte, size)
				for i := 0; i < msgs; i++ {
					body[0] = byte(i)
					if err := ch.Publish("", "q", pika.Message{Body: body}); err != nil {
						t.Errorf("publish: %v", err)
					}
				}
				var check func()
				check = func() {
					peak = max(peak, c.Buffered())
					if c.Buffered() > 0 {
						l.AfterFunc(5*time.Millisecond, check)
						return
					}
					after = c.Buffered()
					c.Close(func(error) { stop() })
				}
				l.AfterFunc(50*time.Millisecond, check)
			})
		})
		wait()
		if got != msgs {
			t.Errorf("the peer got %d messages, want %d", got, msgs)
		}
		if peak < size || after != 0 {
			t.Errorf("Buffered: peak %d (want at least one message, %d), then %d (want 0)", peak, size, after)
		}
	})
}
