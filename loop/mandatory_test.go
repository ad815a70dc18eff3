package loop

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// outcomeName names a PublishConfirm outcome.
func outcomeName(err error) string {
	switch {
	case err == nil:
		return "ack"
	case errors.Is(err, pika.ErrMaybeReturned):
		return "maybe"
	case errors.Is(err, pika.ErrReturned):
		var re *pika.ReturnedError
		if !errors.As(err, &re) || re.Return == nil {
			return "returned without its Return"
		}
		return "returned " + string(re.Return.Body)
	case errors.Is(err, pika.ErrNacked):
		return "nack"
	case errors.Is(err, pika.ErrOutcomeUnknown):
		return "unknown"
	}
	return err.Error()
}

// pubSpec is one message a mandatory-confirm scenario publishes.
type pubSpec struct {
	body      string
	mandatory bool
	noCb      bool // with Publish: in confirm mode, but nobody asks its outcome
}

// Mandatory messages published with PublishConfirm get the outcome package
// pika gives them, in every order RabbitMQ allows between returns and
// confirmations; each callback runs once, in publish order, before the
// OnReturn handler of its return.
func TestPublishConfirmMandatoryOrders(t *testing.T) {
	m := func(body string) pubSpec { return pubSpec{body: body, mandatory: true} }
	cases := []struct {
		name   string
		before int // messages published (mandatory, A) before ConfirmSelect
		msgs   []pubSpec
		// The peer's frames after the publishes: "ret:BODY", "ack:N",
		// "ackm:N" (multiple), "nack:N", "selectok" (when absent,
		// confirm.select-ok is sent before the publishes are read),
		// "close" (the broker closes the channel).
		frames string
		want   string
	}{
		{"return then ack", 0, []pubSpec{m("A")}, "ret:A ack:1",
			"m1 returned A|return A"},
		{"multiple ack covering a return", 0, []pubSpec{{body: "x"}, m("B"), {body: "y"}}, "ret:B ackm:3",
			"m1 ack|m2 returned B|m3 ack|return B"},
		{"return then nack", 0, []pubSpec{m("A")}, "ret:A nack:1",
			"m1 returned A|return A"},
		{"nack without return", 0, []pubSpec{m("A")}, "nack:1",
			"m1 nack"},
		{"ack, then a later message returned", 0, []pubSpec{m("A"), m("B")}, "ack:1 ret:B ack:2",
			"m1 ack|m2 returned B|return B"},
		{"later message acked before an earlier one's return", 0, []pubSpec{m("A"), m("B")}, "ack:2 ret:A ack:1",
			"m1 returned A|m2 ack|return A"},
		{"channel closed after a return, another pending", 0, []pubSpec{m("A"), m("B")}, "ret:A close",
			"m1 returned A|m2 unknown|return A|closed"},
		{"identical messages, one return, multiple ack", 0, []pubSpec{m("A"), m("A")}, "ret:A ackm:2",
			"m1 maybe|m2 maybe|return A"},
		{"identical messages, two returns", 0, []pubSpec{m("A"), m("A")}, "ret:A ret:A ackm:2",
			"m1 returned A|m2 returned A|return A|return A"},
		{"identical messages, first acked, then a return", 0, []pubSpec{m("A"), m("A")}, "ack:1 ret:A ack:2",
			"m1 ack|m2 returned A|return A"},
		{"identical message without callback may be the returned one", 0, []pubSpec{{body: "A", mandatory: true, noCb: true}, m("A")}, "ret:A ackm:2",
			"m2 maybe|return A"},
		{"return of a message published before confirm mode", 1, []pubSpec{m("A")}, "ret:A selectok ack:1",
			"m1 ack|return A"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tokens := strings.Fields(tc.frames)
			selectOKLate := strings.Contains(tc.frames, "selectok")
			closes := strings.Contains(tc.frames, "close")
			cfg, wait := scriptedConfig(t, socketPair, func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				readPublish := func() {
					expect[*wire.BasicPublish](p, 1)
					p.next() // header
					p.next() // body
				}
				for range tc.before {
					readPublish()
				}
				expect[*wire.ConfirmSelect](p, 1)
				if !selectOKLate {
					p.send(scripted.Method(1, &wire.ConfirmSelectOk{}))
				}
				for range tc.msgs {
					readPublish()
				}
				for _, tok := range tokens {
					kind, arg, _ := strings.Cut(tok, ":")
					n, _ := strconv.ParseUint(arg, 10, 64)
					switch kind {
					case "ret":
						p.send(scripted.Message(1, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "k"}, &wire.Properties{}, []byte(arg), 0))
					case "ack", "ackm":
						p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: n, Multiple: kind == "ackm"}))
					case "nack":
						p.send(scripted.Method(1, &wire.BasicNack{DeliveryTag: n}))
					case "selectok":
						p.send(scripted.Method(1, &wire.ConfirmSelectOk{}))
					case "close":
						p.send(scripted.Method(1, &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"}))
						expect[*wire.ChannelCloseOk](p, 1)
					}
				}
				p.closeConn()
			})
			var got []string
			run(t, 10*time.Second, func(l *Loop, stop func()) {
				withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
					pending := 0
					done := func() {
						c.Close(func(error) { stop() })
					}
					ch.OnReturn(func(r *pika.Return) { got = append(got, "return "+string(r.Body)) })
					ch.OnClose(func(err error) {
						if pe := (*pika.Error)(nil); errors.As(err, &pe) && pe.Code == 406 {
							got = append(got, "closed")
							done()
						}
					})
					for range tc.before {
						ch.Publish("", "k", pika.Message{Body: []byte("A"), Mandatory: true})
					}
					ch.ConfirmSelect(nil)
					for i, spec := range tc.msgs {
						msg := pika.Message{Body: []byte(spec.body), Mandatory: spec.mandatory}
						if spec.noCb {
							if err := ch.Publish("", "k", msg); err != nil {
								t.Errorf("publish: %v", err)
							}
							continue
						}
						pending++
						err := ch.PublishConfirm("", "k", msg, func(err error) {
							got = append(got, fmt.Sprintf("m%d %s", i+1, outcomeName(err)))
							if pending--; pending == 0 && !closes {
								// The OnReturn handlers queued so far run before Close's callback.
								done()
							}
						})
						if err != nil {
							t.Errorf("PublishConfirm: %v", err)
						}
					}
				})
			})
			wait()
			expectCalls(t, got, strings.Split(tc.want, "|"))
		})
	}
}
