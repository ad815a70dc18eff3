package engine

import (
	"github.com/pika-go/pika/wire"
)

// handleConnectionMethod handles a method on channel 0: the handshake, close
// in both directions, blocked/unblocked and update-secret-ok.
func (c *Conn) handleConnectionMethod(m wire.Method) {
	if c.state == stateClosing {
		switch m := m.(type) {
		case *wire.ConnectionClose:
			// Both sides closed at once: answer, and end with the
			// server's reason, which is not the close the client asked for.
			c.onServerClose(m)
		case *wire.ConnectionCloseOk:
			c.closeNow(c.err)
		}
		return
	}
	switch m := m.(type) {
	case *wire.ConnectionStart:
		c.onStart(m)
	case *wire.ConnectionSecure:
		c.onSecure(m)
	case *wire.ConnectionTune:
		c.onTune(m)
	case *wire.ConnectionOpenOk:
		if c.state != stateOpening {
			c.protocolFail(wire.ReplyCommandInvalid, "unexpected connection.open-ok", nil)
			return
		}
		c.state = stateOpen
		c.handshakeDeadline = timeZero
		c.emit(Event{Kind: EventOpen})
	case *wire.ConnectionClose:
		c.onServerClose(m)
	case *wire.ConnectionBlocked:
		if c.state != stateOpen {
			return
		}
		c.emit(Event{Kind: EventBlocked, Reason: m.Reason})
	case *wire.ConnectionUnblocked:
		if c.state != stateOpen {
			return
		}
		c.emit(Event{Kind: EventUnblocked})
	case *wire.ConnectionUpdateSecretOk:
		c.onReply(c.chans[0], m)
	default:
		// close-ok without a close, or a client-only method (filtered earlier).
		c.protocolFail(wire.ReplyCommandInvalid, "unexpected "+m.ID().String(), nil)
	}
}

func (c *Conn) onStart(m *wire.ConnectionStart) {
	if c.state != stateStart || c.authStep != nil {
		c.protocolFail(wire.ReplyCommandInvalid, "unexpected connection.start", nil)
		return
	}
	if m.VersionMajor != 0 || m.VersionMinor != 9 {
		c.closeNow(&handshakeError{err: ErrProtocolVersion, detail: "server speaks " + itoa(int(m.VersionMajor)) + "-" + itoa(int(m.VersionMinor))})
		return
	}
	c.server = m.ServerProperties
	mech, err := chooseMechanism(c.s.Mechanisms, m.Mechanisms)
	if err != nil {
		c.closeNow(err)
		return
	}
	c.mech = mech
	if c.s.DeferAuth {
		c.authStep = m
		c.emit(Event{Kind: EventAuth, Method: m})
		return
	}
	c.startResponse(mech.Start())
}

// startResponse answers connection.start with the mechanism's initial
// response, or ends the handshake when the mechanism failed.
func (c *Conn) startResponse(resp []byte, err error) {
	mech := c.mech
	if err != nil {
		c.closeNow(&handshakeError{err: ErrAuthentication, detail: mech.Name() + " initial response", cause: err})
		return
	}
	ok := &wire.ConnectionStartOk{
		ClientProperties: c.s.clientProperties(),
		Mechanism:        mech.Name(),
		Response:         string(resp),
		Locale:           c.s.Locale,
	}
	if err := c.sendMethod(0, ok); err != nil {
		c.closeNow(&handshakeError{err: ErrHandshakeClosed, detail: "cannot encode connection.start-ok", cause: err})
		return
	}
	c.state = stateSecure
}

func (c *Conn) onSecure(m *wire.ConnectionSecure) {
	if c.state != stateSecure || c.authStep != nil {
		c.protocolFail(wire.ReplyCommandInvalid, "unexpected connection.secure", nil)
		return
	}
	if c.s.DeferAuth {
		c.authStep = m
		c.emit(Event{Kind: EventAuth, Method: m})
		return
	}
	c.secureResponse(c.mech.Challenge([]byte(m.Challenge)))
}

// secureResponse answers connection.secure with the mechanism's response,
// or closes the connection when the mechanism failed.
func (c *Conn) secureResponse(resp []byte, err error) {
	if err != nil {
		// The client cannot go on; tell the server why.
		c.sendMethod(0, &wire.ConnectionClose{ReplyCode: uint16(wire.ReplyAccessRefused), ReplyText: "client cannot answer the SASL challenge"})
		c.closeNow(&handshakeError{err: ErrAuthentication, detail: c.mech.Name() + " challenge", cause: err})
		return
	}
	c.sendMethod(0, &wire.ConnectionSecureOk{Response: string(resp)})
}

func (c *Conn) onTune(m *wire.ConnectionTune) {
	if c.state != stateSecure || c.authStep != nil {
		c.protocolFail(wire.ReplyCommandInvalid, "unexpected connection.tune", nil)
		return
	}
	if m.FrameMax != 0 && m.FrameMax < wire.FrameMinSize {
		c.protocolFail(wire.ReplySyntaxError, "connection.tune frame-max "+itoa(int(m.FrameMax))+" is below the protocol minimum 4096", nil)
		return
	}
	c.tune = c.s.negotiate(m)
	c.inMax = c.tune.FrameMax
	c.sendMethod(0, &wire.ConnectionTuneOk{
		ChannelMax: c.tune.ChannelMax,
		FrameMax:   c.tune.FrameMax,
		Heartbeat:  uint16(c.tune.Heartbeat / 1e9),
	})
	c.sendMethod(0, &wire.ConnectionOpen{VirtualHost: c.s.Vhost})
	c.state = stateOpening
	// Heartbeat bookkeeping starts now.
	c.lastRecv, c.lastSend = c.now, c.now
}

// Mechanism returns the SASL mechanism chosen from Config.Mechanisms for the
// server's connection.start, or nil before it arrives.
func (c *Conn) Mechanism() Mechanism { return c.mech }

// AuthResponse gives the engine the result of the SASL step it asked for
// with EventAuth (Config.DeferAuth): the response of the mechanism's Start
// or Challenge, or the error it returned, which ends the handshake with
// ErrAuthentication. The engine then sends connection.start-ok or
// connection.secure-ok. It does nothing when no step is pending, as after
// the handshake timed out or the connection closed meanwhile.
func (c *Conn) AuthResponse(resp []byte, err error) {
	step := c.authStep
	if step == nil || c.state == stateClosed {
		return
	}
	c.authStep = nil
	if _, ok := step.(*wire.ConnectionStart); ok {
		c.startResponse(resp, err)
		return
	}
	c.secureResponse(resp, err)
}

// onServerClose handles connection.close from the server: answer close-ok
// and end the connection with the server's error (mapped to a handshake
// error while the handshake runs).
func (c *Conn) onServerClose(m *wire.ConnectionClose) {
	e := &Error{
		Code:    wire.ReplyCode(m.ReplyCode),
		Text:    m.ReplyText,
		Method:  wire.MethodID(uint32(m.ClassID)<<16 | uint32(m.MethodID)),
		Server:  true,
		Conn:    true,
		Channel: 0,
	}
	c.sendMethod(0, &wire.ConnectionCloseOk{})
	var err error = e
	switch c.state {
	case stateStart, stateSecure:
		if e.Code == wire.ReplyAccessRefused {
			err = &handshakeError{err: ErrAuthentication, cause: e}
		} else {
			err = &handshakeError{err: ErrHandshakeClosed, cause: e}
		}
	case stateOpening:
		if e.Code == wire.ReplyNotAllowed || e.Code == wire.ReplyAccessRefused || e.Code == wire.ReplyInvalidPath {
			err = &handshakeError{err: ErrVhostRefused, detail: "vhost " + quoteBytes([]byte(c.s.Vhost)), cause: e}
		} else {
			err = &handshakeError{err: ErrHandshakeClosed, cause: e}
		}
	}
	c.closeNow(err)
}

// UpdateSecret sends connection.update-secret with a new secret (for
// example a refreshed OAuth 2 token) and reason. Its EventReply, on channel
// 0, carries *wire.ConnectionUpdateSecretOk.
func (c *Conn) UpdateSecret(secret, reason string) (RequestID, error) {
	if c.state != stateOpen {
		return 0, c.notOpenErr()
	}
	return c.request(c.chans[0], &wire.ConnectionUpdateSecret{NewSecret: secret, Reason: reason})
}

func (c *Conn) notOpenErr() error {
	switch c.state {
	case stateClosed:
		return c.closedErr()
	case stateClosing:
		return ErrClosed
	}
	return ErrNotOpen
}
