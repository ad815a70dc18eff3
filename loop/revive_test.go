package loop

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// openAnyChannel answers a channel.open on whatever channel it comes and
// returns the channel's number.
func (p *peer) openAnyChannel() uint16 {
	p.t.Helper()
	s := p.next()
	if _, ok := s.Method.(*wire.ChannelOpen); !ok {
		goTB{p.t, p.nc}.Fatalf("peer: want channel.open, got %v", s)
	}
	p.send(scripted.Method(s.Channel, &wire.ChannelOpenOk{}))
	return s.Channel
}

// nodeDown is RabbitMQ's NOT_FOUND for a classic queue whose node is down.
func nodeDown(queue string) *wire.ChannelClose {
	return &wire.ChannelClose{ReplyCode: 404, ClassID: 50, MethodID: 10,
		ReplyText: "NOT_FOUND - home node 'rabbit@node1' of durable queue '" + queue + "' in vhost '/' is down or inaccessible"}
}

// A consumer that RabbitMQ cancels is not ended while its queue exists:
// the loop checks the queue (passive declares on a channel of its own),
// waits while its node is down (RecoveryConsumerWaiting, after the
// Config.Reconnect delay), and starts the same Consumer again with its tag
// once the queue is back (RecoveryConsumerRestored). A cancel whose queue
// is gone ends the consumer with pika.ErrConsumerCancelled.
func TestRecoveryConsumerWaitsForItsQueue(t *testing.T) {
	for _, deleted := range []bool{false, true} {
		t.Run(fmt.Sprint("deleted ", deleted), func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair, func(p *peer) {
					consumeThenCancel(p)
					check := p.openAnyChannel()
					if deleted {
						answer[*wire.QueueDeclare](p, check, &wire.ChannelClose{ReplyCode: 404, ClassID: 50, MethodID: 10,
							ReplyText: "NOT_FOUND - no queue 'q' in vhost '/'"})
						expect[*wire.ChannelCloseOk](p, check)
						p.closeConn()
						return
					}
					answer[*wire.QueueDeclare](p, check, nodeDown("q"))
					expect[*wire.ChannelCloseOk](p, check)
					check = p.openAnyChannel()
					answer[*wire.QueueDeclare](p, check, &wire.QueueDeclareOk{Queue: "q"})
					answer[*wire.ChannelClose](p, check, &wire.ChannelCloseOk{})
					answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
					p.send(scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("back"), 0))
					p.closeConn()
				})
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						ch.Consume("q", ConsumeOptions{Tag: "c1", AutoAck: true, OnEnd: func(err error) {
							got = append(got, fmt.Sprint("ended: ", errors.Is(err, pika.ErrConsumerCancelled)))
							if deleted {
								closeAndStop(t, c, stop)
							}
						}}, func(d *Delivery) {
							got = append(got, "delivery "+string(d.Body))
							closeAndStop(t, c, stop)
						}, nil)
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							got = append(got, fmt.Sprint(ev.Kind, " ", ev.Attempt, " ", ev.Queue, " ", ev.ConsumerTag, " ",
								errors.Is(ev.Err, pika.ErrQueueUnavailable)))
						})
					})
				})
				wait()
				want := []string{"consumer-waiting 1 q c1 true", "consumer-restored 2 q c1 false", "delivery back", "ended: false"}
				if deleted {
					want = []string{"ended: true"}
				}
				// A recovery event and the deliveries that follow a
				// restart may come in either order (events run after the
				// work at hand, deliveries in their channel's order).
				slices.Sort(got)
				slices.Sort(want)
				expectCalls(t, got, want)
			})
		})
	}
}

// A restore that finds a consumer's queue on a node that is down keeps the
// consumer waiting for it instead of ending it.
func TestRecoveryRestoreWaitsForAnUnavailableQueue(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, nodeDown("q"))
				expect[*wire.ChannelCloseOk](p, 2)
				// The consumer's own check, at once.
				check := p.openAnyChannel()
				answer[*wire.QueueDeclare](p, check, &wire.QueueDeclareOk{Queue: "q"})
				answer[*wire.ChannelClose](p, check, &wire.ChannelCloseOk{})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.Consume("q", ConsumeOptions{Tag: "c1"}, func(*Delivery) {}, nil)
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, fmt.Sprint(ev.Kind, " ", ev.Attempt))
					switch ev.Kind {
					case pika.RecoveryRecovered:
						if f := ev.Report.Failed; len(f) != 1 || !errors.Is(f[0].Err, pika.ErrQueueUnavailable) {
							t.Errorf("failures %v", f)
						}
					case pika.RecoveryConsumerRestored:
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"lost 0", "attempt 1", "recovered 1", "consumer-restored 1"})
	})
}

// consumeThenCancel is a first link's script up to a broker's cancel of
// consumer c1 on channel 1 and the client's cancel-ok.
func consumeThenCancel(p *peer) {
	p.handshake(0)
	p.openChannel(1)
	answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
	p.send(scripted.Method(1, &wire.BasicCancel{ConsumerTag: "c1"}))
	expect[*wire.BasicCancelOk](p, 1)
}

// twoConsumersThenCut is a first link's script: consumers c1 and c2 start
// on channel 1, then the link is cut.
func twoConsumersThenCut(p *peer) {
	p.handshake(0)
	p.openChannel(1)
	answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
	answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c2"})
	p.cut()
}

// returnedThenCut is a first link's script: channel 1 in confirm mode
// takes two publishes, the first ("m1") comes back as a return, and the
// link is cut before any confirmation.
func returnedThenCut(p *peer) {
	p.confirmChannel()
	expectPublish(p, 1)
	expectPublish(p, 1)
	p.send(scripted.Message(1, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, nil, []byte("m1"), 0))
	p.cut()
}
