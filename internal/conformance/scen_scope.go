package conformance

import (
	"errors"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of error scoping seen through the client, and of heartbeats.

func scopeChannelErrorSparesOthers(e *Env) {
	c := e.Dial()
	pub := e.ConfirmChan(c)
	q := e.Queue(pub, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume")
	bad := e.Chan(c)
	_, err = bad.QueueDeclarePassive(e.Ctx, e.Name("missing"))
	e.Fail(err, wire.ReplyNotFound, ChannelScope, "")
	e.PublishSync(pub, "", q, Body("after"))
	e.NextBody(cons, "after")
}

func scopeConnErrorClosesAll(e *Env) {
	c := e.Dial()
	ch1 := e.Chan(c)
	q := e.Queue(ch1, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume")
	bad := e.Chan(c)
	err = bad.ExchangeDeclare(e.Ctx, e.Name("x"), "no-such-kind", pika.ExchangeDeclareOptions{})
	e.ConnClosed(c, err, wire.ReplyCommandInvalid, "")
	for _, ch := range []*pika.Channel{ch1, cch, bad} {
		select {
		case <-ch.Done():
		case <-e.Ctx.Done():
			e.T.Fatalf("channel %d still open after a connection error", ch.ID())
		}
	}
	if _, err := cons.Next(e.Ctx); err == nil {
		e.T.Fatalf("consumer delivered after its connection closed")
	}
}

func scopeConnErrorDropsExclusive(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Exclusive: true})
	err := ch.ExchangeDeclare(e.Ctx, e.Name("x"), "no-such-kind", pika.ExchangeDeclareOptions{})
	e.ConnClosed(c, err, wire.ReplyCommandInvalid, "")
	e.EventuallyGone(e.Dial(), q)
}

func scopeChannelErrorRequeues(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("m"))
	bad := e.Chan(c)
	e.Get(bad, q)
	_, err := bad.QueueDeclarePassive(e.Ctx, e.Name("missing"))
	e.Fail(err, wire.ReplyNotFound, ChannelScope, "")
	e.WaitDepth(ch, q, 1)
	d := e.GetBody(ch, q, "m")
	Equal(e, "redelivered after the channel error", d.Redelivered, true)
}

func scopeClosedChannelCalls(e *Env) {
	c, ch := e.Open()
	_, err := ch.QueueDeclarePassive(e.Ctx, e.Name("missing"))
	e.Fail(err, wire.ReplyNotFound, ChannelScope, "")
	_, err = ch.QueueDeclarePassive(e.Ctx, e.Name("missing"))
	if !errors.Is(err, pika.ErrChannelClosed) {
		e.T.Fatalf("a call on the closed channel: %v, want ErrChannelClosed", err)
	}
	e.Chan(c)
}

func scopeSoftErrorsAreChannel(e *Env) {
	// Every soft error of RabbitMQ closes only the channel: 403, 404, 405
	// and 406 on four channels of one connection, which stays usable.
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, lockedCh := e.Open()
	locked := e.Queue(lockedCh, "locked", pika.QueueDeclareOptions{Exclusive: true})
	cases := []struct {
		code wire.ReplyCode
		call func(ch *pika.Channel) error
	}{
		{wire.ReplyAccessRefused, func(ch *pika.Channel) error {
			return ch.ExchangeDelete(e.Ctx, "amq.topic", pika.ExchangeDeleteOptions{})
		}},
		{wire.ReplyNotFound, func(ch *pika.Channel) error {
			_, err := ch.QueuePurge(e.Ctx, e.Name("missing"), pika.PurgeOptions{})
			return err
		}},
		{wire.ReplyResourceLocked, func(ch *pika.Channel) error {
			_, err := ch.QueuePurge(e.Ctx, locked, pika.PurgeOptions{})
			return err
		}},
		{wire.ReplyPreconditionFailed, func(ch *pika.Channel) error {
			_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Durable: true})
			return err
		}},
	}
	for _, tc := range cases {
		ch := e.Chan(c)
		e.ChannelClosed(c, ch, tc.call(ch), tc.code, "")
	}
}

func heartbeatSent(e *Env) {
	r, tune := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: 1})
	r.Send(0, &wire.ConnectionOpen{VirtualHost: e.Vhost()})
	r.Expect(0, &wire.ConnectionOpenOk{})
	start := time.Now()
	for {
		f, err := r.fr.ReadFrame()
		e.Must(err, "read")
		if f.Type == wire.FrameHeartbeat {
			Equal(e, "heartbeat channel", f.Channel, 0)
			break
		}
	}
	r.Write(wire.AppendHeartbeatFrame(nil))
	if d := time.Since(start); d > 3*time.Second {
		e.T.Errorf("first heartbeat after %v with a 1 s interval", d)
	}
}

func heartbeatTimeout(e *Env) {
	r, tune := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: 1})
	r.Send(0, &wire.ConnectionOpen{VirtualHost: e.Vhost()})
	r.Expect(0, &wire.ConnectionOpenOk{})
	// Send nothing: the broker gives up after missing two intervals and
	// drops the socket without connection.close.
	start := time.Now()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			break
		}
		if f.Type != wire.FrameHeartbeat {
			e.T.Fatalf("got a frame of type %d, want only heartbeats and then the socket closed", f.Type)
		}
	}
	if d := time.Since(start); d < time.Second {
		e.T.Errorf("socket closed %v after open with a 1 s heartbeat: too early", d)
	}
}

func heartbeatZero(e *Env) {
	r, tune := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: 0})
	r.Send(0, &wire.ConnectionOpen{VirtualHost: e.Vhost()})
	r.Expect(0, &wire.ConnectionOpenOk{})
	r.ExpectSilenceFor(1500 * time.Millisecond)
	r.OpenChannel(1)
}
