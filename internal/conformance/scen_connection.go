package conformance

import (
	"errors"
	"strings"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of the connection: handshake, tuning, channels.

func connPlain(e *Env) {
	c, err := e.DialConfig(func(cfg *pika.Config) {
		cfg.Mechanisms = []pika.Mechanism{pika.PlainAuth{Username: cfg.Username, Password: cfg.Password}}
	})
	e.Must(err, "dial with PLAIN")
	e.Chan(c)
}

func connAMQPlain(e *Env) {
	c, err := e.DialConfig(func(cfg *pika.Config) {
		cfg.Mechanisms = []pika.Mechanism{pika.AMQPlainAuth{Username: cfg.Username, Password: cfg.Password}}
	})
	e.Must(err, "dial with AMQPLAIN")
	e.Chan(c)
}

func connStartMechanisms(e *Env) {
	r := e.RawConnect()
	st := r.Expect(0, &wire.ConnectionStart{}).(*wire.ConnectionStart)
	Equal(e, "version", [2]uint8{st.VersionMajor, st.VersionMinor}, [2]uint8{0, 9})
	mechs := strings.Fields(st.Mechanisms)
	for _, want := range []string{"PLAIN", "AMQPLAIN"} {
		found := false
		for _, m := range mechs {
			found = found || m == want
		}
		if !found {
			e.T.Fatalf("mechanisms %q lack %s", st.Mechanisms, want)
		}
	}
	Equal(e, "locales", st.Locales, "en_US")
	caps, _ := st.ServerProperties["capabilities"].(wire.Table)
	for _, c := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
		"consumer_cancel_notify", "connection.blocked", "authentication_failure_close", "per_consumer_qos", "direct_reply_to"} {
		if caps[c] != true {
			e.T.Errorf("capability %s = %v, want true", c, caps[c])
		}
	}
	if _, ok := st.ServerProperties["product"].(string); !ok {
		e.T.Errorf("server properties lack product: %v", st.ServerProperties)
	}
}

func connBadPasswordClose(e *Env) {
	cfg := e.Config()
	r := e.RawConnect()
	r.Start = r.Expect(0, &wire.ConnectionStart{}).(*wire.ConnectionStart)
	r.Send(0, &wire.ConnectionStartOk{
		ClientProperties: wire.Table{"capabilities": wire.Table{"authentication_failure_close": true}},
		Mechanism:        "PLAIN",
		Response:         "\x00" + cfg.Username + "\x00" + cfg.Password + "-wrong",
		Locale:           "en_US",
	})
	cl := r.ExpectConnClose(wire.ReplyAccessRefused, refusedText("PLAIN"))
	Equal(e, "class of the failing method", cl.ClassID, 0)
}

func connBadPasswordDrop(e *Env) {
	cfg := e.Config()
	r := e.RawConnect()
	r.StartOk("PLAIN", "\x00"+cfg.Username+"\x00"+cfg.Password+"-wrong")
	r.ExpectEOF()
}

func connBadPasswordClient(e *Env) {
	_, err := e.DialConfig(func(cfg *pika.Config) { cfg.Password += "-wrong" })
	if !errors.Is(err, pika.ErrAuthentication) {
		e.T.Fatalf("dial with a wrong password: %v, want ErrAuthentication", err)
	}
	e.Fail(err, wire.ReplyAccessRefused, ConnScope, refusedText("PLAIN"))
}

func connBadPasswordAMQPlain(e *Env) {
	cfg := e.Config()
	resp, err := wire.AppendTable(nil, wire.Table{"LOGIN": cfg.Username, "PASSWORD": cfg.Password + "-wrong"})
	e.Must(err, "encode AMQPLAIN response")
	r := e.RawConnect()
	r.Expect(0, &wire.ConnectionStart{})
	r.Send(0, &wire.ConnectionStartOk{
		ClientProperties: wire.Table{"capabilities": wire.Table{"authentication_failure_close": true}},
		Mechanism:        "AMQPLAIN",
		Response:         string(resp[4:]), // AMQPLAIN sends the table without its length
		Locale:           "en_US",
	})
	r.ExpectConnClose(wire.ReplyAccessRefused, refusedText("AMQPLAIN"))
}

func connUnknownUser(e *Env) {
	_, err := e.DialConfig(func(cfg *pika.Config) { cfg.Username = e.Name("nobody") })
	if !errors.Is(err, pika.ErrAuthentication) {
		e.T.Fatalf("dial as an unknown user: %v, want ErrAuthentication", err)
	}
	e.Fail(err, wire.ReplyAccessRefused, ConnScope, refusedText("PLAIN"))
}

func connUnknownMechanism(e *Env) {
	r := e.RawConnect()
	r.StartOk("NOPE", "x")
	r.ExpectEOF()
}

func connVhostNotFound(e *Env) {
	vhost := e.Name("vhost")
	_, err := e.DialConfig(func(cfg *pika.Config) { cfg.Vhost = vhost })
	if !errors.Is(err, pika.ErrVhostRefused) {
		e.T.Fatalf("dial to a missing vhost: %v, want ErrVhostRefused", err)
	}
	e.Fail(err, wire.ReplyNotAllowed, ConnScope, "NOT_ALLOWED - vhost "+vhost+" not found")
}

func connVhostRaw(e *Env) {
	vhost := e.Name("vhost")
	r, tune := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax})
	r.Send(0, &wire.ConnectionOpen{VirtualHost: vhost})
	cl := r.ExpectConnClose(wire.ReplyNotAllowed, "NOT_ALLOWED - vhost "+vhost+" not found")
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodConnectionOpen)
}

func connTuneProposal(e *Env) {
	_, tune := e.rawTune()
	Equal(e, "channel_max", tune.ChannelMax, 2047)
	Equal(e, "frame_max", tune.FrameMax, 131072)
	Equal(e, "heartbeat", tune.Heartbeat, 60)
}

func connTuneNegotiated(e *Env) {
	c, err := e.DialConfig(func(cfg *pika.Config) {
		cfg.FrameMax = 8192
		cfg.ChannelMax = 7
		cfg.Heartbeat = 5 * time.Second
	})
	e.Must(err, "dial")
	tn := c.Tuning()
	Equal(e, "frame_max", tn.FrameMax, 8192)
	Equal(e, "channel_max", tn.ChannelMax, 7)
	Equal(e, "heartbeat", tn.Heartbeat, 5*time.Second)
	// A message larger than frame_max arrives whole, split in body frames.
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	body := strings.Repeat("x", 3*8192+17)
	e.PublishSync(ch, "", q, Body(body))
	e.GetBody(ch, q, body)
}

func connFrameMaxTooSmall(e *Env) {
	r, _ := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: 10, FrameMax: 1024})
	r.ExpectEOF()
}

func connFrameMaxTooLarge(e *Env) {
	r, tune := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: 10, FrameMax: tune.FrameMax + 1})
	r.ExpectEOF()
}

func connChannelMaxReached(e *Env) {
	r, tune := e.rawTune()
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: 2, FrameMax: tune.FrameMax})
	r.Send(0, &wire.ConnectionOpen{VirtualHost: e.Vhost()})
	r.Expect(0, &wire.ConnectionOpenOk{})
	r.OpenChannel(1)
	r.OpenChannel(2)
	r.Send(3, &wire.ChannelOpen{})
	r.ExpectConnClose(wire.ReplyNotAllowed, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)")
}

func connChannelMaxClient(e *Env) {
	c, err := e.DialConfig(func(cfg *pika.Config) { cfg.ChannelMax = 3 })
	e.Must(err, "dial")
	for i := 0; i < 3; i++ {
		e.Chan(c)
	}
	if _, err := c.Channel(e.Ctx); !errors.Is(err, pika.ErrNoFreeChannel) {
		e.T.Fatalf("fourth channel with channel_max 3: %v, want ErrNoFreeChannel", err)
	}
}

func connOpenBeforeTune(e *Env) {
	r, _ := e.rawTune()
	r.Send(0, &wire.ConnectionOpen{VirtualHost: e.Vhost()})
	r.ExpectEOF()
}

func connBadProtocolHeader(e *Env) {
	r := e.RawConnectHeader("AMQP\x00\x00\x08\x00")
	got := make([]byte, 8)
	r.ReadFull(got)
	Equal(e, "server protocol header", string(got), wire.ProtocolHeader)
	r.ExpectEOF()
}

func connGarbageHeader(e *Env) {
	r := e.RawConnectHeader("HTTP/1.1")
	got := make([]byte, 8)
	r.ReadFull(got)
	Equal(e, "server protocol header", string(got), wire.ProtocolHeader)
	r.ExpectEOF()
}

func connClientClose(e *Env) {
	r := e.RawDial(0)
	r.Send(0, &wire.ConnectionClose{ReplyCode: 200, ReplyText: "bye"})
	r.Expect(0, &wire.ConnectionCloseOk{})
	r.ExpectSilence()
}

func connClientName(e *Env) {
	c, err := e.DialConfig(func(cfg *pika.Config) { cfg.ConnectionName = e.Name("conn") })
	e.Must(err, "dial with a connection name")
	e.Chan(c)
}

func connServerProperties(e *Env) {
	c := e.Dial()
	p := c.ServerProperties()
	for _, k := range []string{"product", "version", "platform", "capabilities"} {
		if _, ok := p[k]; !ok {
			e.T.Errorf("server properties lack %q: %v", k, p)
		}
	}
	if prod, _ := p["product"].(string); prod == "" {
		e.T.Errorf("product %v, want a non-empty string", p["product"])
	}
}

func connHeartbeatEcho(e *Env) {
	r := e.RawDial(0)
	r.Write(wire.AppendHeartbeatFrame(nil))
	r.OpenChannel(1)
	r.Sync(1)
}

func connMultipleChannels(e *Env) {
	c := e.Dial()
	ch1, ch2 := e.ConfirmChan(c), e.Chan(c)
	if ch1.ID() == ch2.ID() {
		e.T.Fatalf("two channels share id %d", ch1.ID())
	}
	q := e.Queue(ch1, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch1, "", q, Body("m"))
	e.GetBody(ch2, q, "m")
	e.Must(ch1.Close(e.Ctx), "channel.close")
	e.GetEmpty(ch2, q)
}

func connReuseChannelID(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(5)
	r.Send(5, &wire.ChannelClose{ReplyCode: 200, ReplyText: "done"})
	r.Expect(5, &wire.ChannelCloseOk{})
	r.OpenChannel(5)
	r.Sync(5)
}

// rawTune connects, authenticates with the URL's credentials and returns
// the broker's connection.tune, unanswered.
func (e *Env) rawTune() (*Raw, *wire.ConnectionTune) {
	e.T.Helper()
	cfg := e.Config()
	r := e.RawConnect()
	r.StartOk("PLAIN", "\x00"+cfg.Username+"\x00"+cfg.Password)
	return r, r.Expect(0, &wire.ConnectionTune{}).(*wire.ConnectionTune)
}

// refusedText is RabbitMQ's text for refused credentials.
func refusedText(mechanism string) string {
	return "ACCESS_REFUSED - Login was refused using authentication mechanism " + mechanism + ". For details see the broker logfile."
}

func connUpdateSecret(e *Env) {
	c := e.Dial()
	cfg := e.Config()
	err := c.UpdateSecret(e.Ctx, cfg.Password, "rotation")
	e.Must(err, "connection.update-secret with the same password")
	e.Chan(c)
}
