package pika

import (
	"errors"

	"github.com/pika-go/pika/internal/standin"
)

// Stand-ins: package loop reports its connections to the same hooks
// (Config.Hooks) as a Conn, and the hook interfaces take *Conn, *Channel,
// *Consumer and *Delivery. For a loop connection they get stand-ins made
// here: one per loop connection, channel and consumer, so that they serve
// as keys, whose accessors answer for the loop's value (Conn: IsClosed,
// Err, IsRecovering, IsBlocked, ServerProperties, Tuning, LocalAddr,
// RemoteAddr; Channel: ID, Conn, IsClosed, Err; Consumer: Channel, Tag,
// Queue (the loop consumer's queue as it is now, renamed by recovery);
// Delivery: its fields, and Ack, Nack and Reject through the loop's
// channel). Everything else fails as on a closed connection, with
// errStandIn: a stand-in's Done channels are closed, calls that would talk
// to the broker return errStandIn, and OnClose callbacks run at once with
// it.

// errStandIn is what calls on a stand-in fail with.
var errStandIn = errors.New("pika: this Conn, Channel or Consumer stands for a package loop value in a hook: only its accessors work; act on the loop's value")

func init() {
	standin.NewConn = newStandInConn
	standin.NewChannel = newStandInChannel
	standin.NewConsumer = newStandInConsumer
	standin.NewDelivery = func(ch any) any { return &Delivery{ch: ch.(*Channel)} }
}

func newStandInConn(v standin.ConnView) any {
	done := make(chan struct{})
	close(done)
	return &Conn{
		view:  v,
		state: connClosed,
		done:  done,
		err:   errStandIn,
		chans: make(map[uint16]*Channel),
	}
}

func newStandInChannel(conn any, id uint16, v standin.ChannelView) any {
	done := make(chan struct{})
	close(done)
	return &Channel{conn: conn.(*Conn), id: id, view: v, done: done, err: errStandIn}
}

func newStandInConsumer(ch any, tag string, v standin.ConsumerView) any {
	done := make(chan struct{})
	close(done)
	return &Consumer{ch: ch.(*Channel), tag: tag, view: v, done: done, endCh: done, err: errStandIn, ended: true}
}
