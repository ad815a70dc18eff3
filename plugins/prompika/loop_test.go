package prompika

import (
	"errors"
	"strings"
	"testing"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/obsmetrics"
	"github.com/pika-go/pika/internal/plugintest"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/loop"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A Collector counts a package loop connection as it counts a pika.Conn
// (the loop calls the same hooks, with stand-ins): 2 messages acked and 1
// returned, 2 delivered, 1 acked and 1 rejected, and the connection,
// channel and consumer open, then closed.
func TestCollectorLoopConn(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	col := New(Options{})
	q := testenv.Name(t, "prom-loop")
	var openMetrics error
	plugintest.RunLoop(t, url, []pika.Hook{col}, func(r *plugintest.LoopRun) {
		fail := func(what string, err error) bool { return r.Fail(t, what, err) }
		r.Loop.DialConfig(r.Cfg, func(c *loop.Conn, err error) {
			if fail("dial", err) {
				return
			}
			c.Channel(func(ch *loop.Channel, err error) {
				if fail("channel", err) {
					return
				}
				ch.QueueDeclare(q, pika.QueueDeclareOptions{Exclusive: true}, func(_ pika.Queue, err error) { fail("declare", err) })
				ch.ConfirmSelect(func(err error) { fail("confirm.select", err) })
				for _, body := range []string{"a", "b"} {
					ch.PublishConfirm("", q, pika.Message{Body: []byte(body)}, func(err error) { fail("publish", err) })
				}
				ch.PublishConfirm("", q+".nowhere", pika.Message{Body: []byte("r"), Mandatory: true}, func(err error) {
					if !errors.Is(err, pika.ErrReturned) {
						t.Errorf("unroutable: %v, want ErrReturned", err)
					}
				})
				n := 0
				var cons *loop.Consumer
				ch.Consume(q, loop.ConsumeOptions{}, func(d *loop.Delivery) {
					if n++; n == 1 {
						fail("ack", d.Ack(false))
						return
					}
					fail("reject", d.Reject(false))
					openMetrics = testutil.CollectAndCompare(col, strings.NewReader(`
# HELP pika_channels_open Channels open.
# TYPE pika_channels_open gauge
pika_channels_open 1
# HELP pika_consumers_active Consumers started and not yet ended.
# TYPE pika_consumers_active gauge
pika_consumers_active 1
# HELP pika_connections_open Connections open (AMQP handshake done, not yet closed).
# TYPE pika_connections_open gauge
pika_connections_open 1
`), obsmetrics.ChannelsOpen, obsmetrics.ConsumersActive, obsmetrics.ConnectionsOpen)
					cons.Cancel(func(err error) {
						fail("cancel", err)
						ch.Close(func(err error) {
							fail("channel close", err)
							c.Close(func(err error) { fail("close", err); r.Stop() })
						})
					})
				}, func(c *loop.Consumer, err error) { cons = c; fail("consume", err) })
			})
		})
	})
	if openMetrics != nil {
		t.Errorf("while open: %v", openMetrics)
	}
	if err := testutil.CollectAndCompare(col, strings.NewReader(`
# HELP pika_channels_open Channels open.
# TYPE pika_channels_open gauge
pika_channels_open 0
# HELP pika_consumers_active Consumers started and not yet ended.
# TYPE pika_consumers_active gauge
pika_consumers_active 0
# HELP pika_connections_open Connections open (AMQP handshake done, not yet closed).
# TYPE pika_connections_open gauge
pika_connections_open 0
# HELP pika_messages_published_total Messages published (Publish returned nil).
# TYPE pika_messages_published_total counter
pika_messages_published_total 3
# HELP pika_publish_outcomes_total Outcomes of messages published in confirm mode.
# TYPE pika_publish_outcomes_total counter
pika_publish_outcomes_total{outcome="acked"} 2
pika_publish_outcomes_total{outcome="maybe_returned"} 0
pika_publish_outcomes_total{outcome="nacked"} 0
pika_publish_outcomes_total{outcome="returned"} 1
pika_publish_outcomes_total{outcome="unknown"} 0
# HELP pika_deliveries_received_total Deliveries handed to the application (consumers and Get).
# TYPE pika_deliveries_received_total counter
pika_deliveries_received_total 2
# HELP pika_deliveries_settled_total Deliveries the application acknowledged (ack), or rejected (nack, reject).
# TYPE pika_deliveries_settled_total counter
pika_deliveries_settled_total{kind="ack"} 1
pika_deliveries_settled_total{kind="nack"} 0
pika_deliveries_settled_total{kind="reject"} 1
`), obsmetrics.ChannelsOpen, obsmetrics.ConsumersActive, obsmetrics.ConnectionsOpen, obsmetrics.MessagesPublished,
		obsmetrics.PublishOutcomes, obsmetrics.DeliveriesReceived, obsmetrics.DeliveriesSettled); err != nil {
		t.Error(err)
	}
	if c := testutil.CollectAndCount(col, obsmetrics.BytesRead, obsmetrics.BytesWritten); c != 2 {
		t.Errorf("byte counters: %d series", c)
	}
}
