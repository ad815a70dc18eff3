package pikatest

import (
	"encoding/binary"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pika-go/pika/wire"
)

// This file is the connection handshake: protocol header, connection.start
// with PLAIN and AMQPLAIN, tune negotiation and connection.open.

// protocolHeader reads and checks the client's protocol header. A wrong
// one is answered with the broker's header and the socket is closed.
func (c *conn) protocolHeader() bool {
	var hdr [8]byte
	if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
		return false
	}
	if string(hdr[:]) != wire.ProtocolHeader {
		c.sendBytes([]byte(wire.ProtocolHeader))
		return false
	}
	return true
}

// startFrame is the broker's connection.start, the same for every
// connection: encoded once.
var startFrame = sync.OnceValue(func() []byte {
	b, err := wire.AppendMethodFrame(nil, 0, &wire.ConnectionStart{VersionMajor: 0, VersionMinor: 9,
		ServerProperties: serverProperties(), Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US"})
	if err != nil {
		panic("pikatest: cannot encode connection.start: " + err.Error())
	}
	return b
})

// handshake runs connection.start to connection.open-ok.
func (c *conn) handshake(fr *wire.FrameReader) bool {
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer c.nc.SetReadDeadline(time.Time{})
	if !c.protocolHeader() {
		return false
	}
	c.sendBytes(startFrame())
	next := func(want wire.MethodID) (wire.Method, bool) {
		for {
			// Like RabbitMQ, the broker answers any handshake error before
			// connection.open by closing the socket.
			f, err := fr.ReadFrame()
			if err != nil {
				return nil, false
			}
			if f.Type == wire.FrameHeartbeat {
				continue
			}
			if f.Type != wire.FrameMethod || f.Channel != 0 {
				return nil, false
			}
			m, err := c.dec.Decode(f.Payload)
			if err != nil {
				return nil, false
			}
			if m.ID() == wire.MethodConnectionClose {
				c.send(0, &wire.ConnectionCloseOk{})
				return nil, false
			}
			if m.ID() != want {
				return nil, false
			}
			return m, true
		}
	}
	m, ok := next(wire.MethodConnectionStartOk)
	if !ok {
		return false
	}
	so := m.(*wire.ConnectionStartOk)
	c.props = so.ClientProperties
	if caps, ok := so.ClientProperties["capabilities"].(wire.Table); ok {
		c.capBlocked, _ = caps["connection.blocked"].(bool)
		c.capCancel, _ = caps["consumer_cancel_notify"].(bool)
	}
	c.name, _ = so.ClientProperties["connection_name"].(string)
	authClose := false
	if caps, ok := so.ClientProperties["capabilities"].(wire.Table); ok {
		authClose, _ = caps["authentication_failure_close"].(bool)
	}
	user, pass, ok := credentials(so.Mechanism, so.Response)
	if !ok {
		return false
	}
	if want, ok := c.b.cfg.Users[user]; !ok || want != pass {
		// Only clients announcing authentication_failure_close are told
		// why; the others see the socket close, as RabbitMQ does.
		if authClose {
			c.handshakeFail(connErr(wire.ReplyAccessRefused, "Login was refused using authentication mechanism %s. For details see the broker logfile.", so.Mechanism))
		}
		return false
	}
	c.user, c.mechanism = user, so.Mechanism
	hb := uint16(0)
	if c.b.cfg.Heartbeat > 0 {
		hb = uint16(min(c.b.cfg.Heartbeat/time.Second, 65535))
		if hb == 0 {
			hb = 1
		}
	}
	c.send(0, &wire.ConnectionTune{ChannelMax: c.b.cfg.ChannelMax, FrameMax: c.b.cfg.FrameMax, Heartbeat: hb})
	m, ok = next(wire.MethodConnectionTuneOk)
	if !ok {
		return false
	}
	to := m.(*wire.ConnectionTuneOk)
	if (to.FrameMax != 0 && to.FrameMax < wire.FrameMinSize) || to.FrameMax > c.b.cfg.FrameMax || to.ChannelMax > c.b.cfg.ChannelMax {
		return false
	}
	if to.FrameMax != 0 {
		c.frameMax = to.FrameMax
	}
	if to.ChannelMax != 0 {
		c.channelMax = to.ChannelMax
	}
	fr.SetMaxFrameSize(c.frameMax)
	c.heartbeat = time.Duration(to.Heartbeat) * time.Second
	m, ok = next(wire.MethodConnectionOpen)
	if !ok {
		return false
	}
	vhName := m.(*wire.ConnectionOpen).VirtualHost
	c.b.mu.Lock()
	vh := c.b.vhosts[vhName]
	closed := c.b.closed || c.b.stopped
	if vh != nil && !closed {
		c.vh = vh
		c.open = true
	}
	c.b.unlock()
	if vh == nil {
		e := connErr(wire.ReplyNotAllowed, "vhost %s not found", vhName)
		e.method = wire.MethodConnectionOpen
		c.handshakeFail(e)
		return false
	}
	if closed {
		return false
	}
	c.send(0, &wire.ConnectionOpenOk{})
	if c.heartbeat > 0 {
		go c.heartbeats()
	}
	return true
}

// handshakeFail closes a connection that failed its handshake: with
// connection.close, then a short wait for close-ok.
func (c *conn) handshakeFail(e *amqpError) {
	c.send(0, &wire.ConnectionClose{ReplyCode: uint16(e.code), ReplyText: replyText(e.text),
		ClassID: uint16(e.method.Class()), MethodID: e.method.Index()})
}

// credentials extracts user and password from a PLAIN or AMQPLAIN
// response; false for another mechanism or a malformed response.
func credentials(mechanism, response string) (user, pass string, ok bool) {
	switch mechanism {
	case "PLAIN":
		parts := strings.Split(response, "\x00")
		if len(parts) != 3 {
			return "", "", false
		}
		return parts[1], parts[2], true
	case "AMQPLAIN":
		b := binary.BigEndian.AppendUint32(make([]byte, 0, len(response)+4), uint32(len(response)))
		t, err := wire.DecodeTable(append(b, response...))
		if err != nil {
			return "", "", false
		}
		user, _ = t["LOGIN"].(string)
		pass, _ = t["PASSWORD"].(string)
		return user, pass, true
	}
	return "", "", false
}

func serverProperties() wire.Table {
	return wire.Table{
		// Clients and the conformance suite look for RabbitMQ here;
		// information and cluster_name say what it really is.
		"product":      "RabbitMQ",
		"version":      "3.10.0",
		"platform":     "Go (pikatest)",
		"cluster_name": "pikatest",
		"information":  "An in-process AMQP 0-9-1 broker for tests (github.com/pika-go/pika/pikatest)",
		"capabilities": wire.Table{
			"publisher_confirms":           true,
			"exchange_exchange_bindings":   true,
			"basic.nack":                   true,
			"consumer_cancel_notify":       true,
			"connection.blocked":           true,
			"consumer_priorities":          true,
			"authentication_failure_close": true,
			"per_consumer_qos":             true,
			"direct_reply_to":              true,
		},
	}
}
