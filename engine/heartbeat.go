package engine

import (
	"time"

	"github.com/pika-go/pika/wire"
)

var timeZero time.Time

// Deadline returns the time by which the driver must call Tick next, or the
// zero time when no timer is running. It changes after Start, after the
// handshake, after every Tick, and when heartbeats are negotiated; a driver
// reads it again after each of those calls (reading it after every call into
// the engine is simplest and cheap).
//
// Heartbeats: with a negotiated interval H, the engine sends a heartbeat
// frame when it has sent nothing for H/2, and declares the peer dead
// (EventClosed with ErrHeartbeatTimeout) when it has received nothing for
// 2*H. Traffic is noticed at the next Tick, so the peer-dead verdict comes
// between 2*H and 2.5*H after the last inbound byte.
func (c *Conn) Deadline() time.Time {
	var d time.Time
	if c.state == stateClosed || c.state == stateNew {
		return d
	}
	if !c.handshakeDeadline.IsZero() {
		d = c.handshakeDeadline
	}
	if hb := c.tune.Heartbeat; hb > 0 && c.state >= stateOpening {
		d = earliest(d, c.lastSend.Add(hb/2))
		d = earliest(d, c.lastRecv.Add(2*hb))
	}
	return d
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// Tick tells the engine the time is now. It may queue a heartbeat frame (read
// AppendOutgoing), or end the connection with EventClosed on a handshake or
// heartbeat timeout. Calling it early or often is harmless.
func (c *Conn) Tick(now time.Time) {
	if c.state == stateClosed || c.state == stateNew {
		return
	}
	if now.After(c.now) {
		c.now = now
	}
	if c.recvActivity {
		c.lastRecv, c.recvActivity = now, false
	}
	if c.sendActivity || len(c.out) > 0 {
		c.lastSend, c.sendActivity = now, false
	}
	if !c.handshakeDeadline.IsZero() && !now.Before(c.handshakeDeadline) {
		c.handshakeDeadline = timeZero
		detail := "handshake not complete after " + c.s.HandshakeTimeout.String()
		if c.state == stateStart && c.headerSeen == 0 {
			detail = "the server sent nothing in " + c.s.HandshakeTimeout.String() + " (an AMQP 0-9-1 server answers the protocol header at once)"
		}
		c.closeNow(&handshakeError{err: ErrHandshakeTimeout, detail: detail})
		return
	}
	hb := c.tune.Heartbeat
	if hb <= 0 || c.state < stateOpening {
		return
	}
	if now.Sub(c.lastRecv) >= 2*hb {
		c.closeNow(ErrHeartbeatTimeout)
		return
	}
	if now.Sub(c.lastSend) >= hb/2 {
		c.out = wire.AppendHeartbeatFrame(c.out)
		c.lastSend = now
	}
}

// NoteReceive tells the engine that inbound bytes are known to be waiting
// although the driver is not reading them (it paused reading on purpose, to
// bound its memory). The peer is then alive, and the next Tick does not
// count the pause towards the heartbeat timeout.
func (c *Conn) NoteReceive() { c.recvActivity = true }

// noWait reports whether a method that normally expects a reply has its
// no-wait bit set.
func noWait(m wire.Method) bool {
	switch m := m.(type) {
	case *wire.ExchangeDeclare:
		return m.NoWait
	case *wire.ExchangeDelete:
		return m.NoWait
	case *wire.ExchangeBind:
		return m.NoWait
	case *wire.ExchangeUnbind:
		return m.NoWait
	case *wire.QueueDeclare:
		return m.NoWait
	case *wire.QueueBind:
		return m.NoWait
	case *wire.QueuePurge:
		return m.NoWait
	case *wire.QueueDelete:
		return m.NoWait
	case *wire.BasicConsume:
		return m.NoWait
	case *wire.BasicCancel:
		return m.NoWait
	case *wire.ConfirmSelect:
		return m.NoWait
	}
	return false
}
