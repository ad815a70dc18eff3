package conformance

import (
	"bytes"
	"fmt"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of publishing: mandatory returns, confirms, transactions,
// properties.

func pubMandatoryReturn(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	err := e.Confirmed(ch, x, "nowhere", pika.Message{Body: []byte("lost"), Mandatory: true,
		Properties: pika.Properties{ContentType: "text/plain", Headers: pika.Table{"h": "v"}}})
	r := returned(e, err)
	Equal(e, "reply code", r.ReplyCode, wire.ReplyNoRoute)
	Equal(e, "reply text", r.ReplyText, "NO_ROUTE")
	Equal(e, "exchange", r.Exchange, x)
	Equal(e, "routing key", r.RoutingKey, "nowhere")
	Equal(e, "body", string(r.Body), "lost")
	Equal(e, "content type", r.ContentType, "text/plain")
	Equal(e, "header", r.Headers["h"], any("v"))
}

func pubMandatoryRaw(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ConfirmSelect{})
	r.Expect(1, &wire.ConfirmSelectOk{})
	r.Publish(1, &wire.BasicPublish{RoutingKey: e.Name("nowhere"), Mandatory: true}, nil, []byte("m"))
	// The return comes before the ack of the same message.
	m, _, body := r.Deliver(1)
	ret, ok := m.(*wire.BasicReturn)
	if !ok || ret.ReplyCode != 312 || string(body) != "m" {
		e.T.Fatalf("got %+v %q, want basic.return 312 with the body", m, body)
	}
	ack := r.Expect(1, &wire.BasicAck{}).(*wire.BasicAck)
	Equal(e, "ack tag", ack.DeliveryTag, 1)
	Equal(e, "ack multiple", ack.Multiple, false)
}

func pubNotMandatoryDropped(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	returns := make(chan *pika.Return, 1)
	ch.OnReturn(func(r *pika.Return) { returns <- r })
	e.PublishSync(ch, "", e.Name("nowhere"), Body("dropped"))
	select {
	case r := <-returns:
		e.T.Fatalf("non-mandatory message returned: %+v", r)
	default:
	}
}

func pubMandatoryRouted(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Mandatory: true})
	e.GetBody(ch, q, "m")
}

func pubConfirmTags(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.ConfirmSelect{})
	r.Expect(1, &wire.ConfirmSelectOk{})
	const n = 50
	var out []byte
	for i := 0; i < n; i++ {
		var err error
		out, err = wire.AppendMessage(out, 1, &wire.BasicPublish{RoutingKey: q}, nil, []byte("m"), r.FrameMax)
		e.Must(err, "encode")
	}
	r.Write(out)
	// Acks in order, each tag covered once, possibly with multiple.
	var acked uint64
	for acked < n {
		ack := r.Expect(1, &wire.BasicAck{}).(*wire.BasicAck)
		switch {
		case ack.Multiple && ack.DeliveryTag > acked:
			acked = ack.DeliveryTag
		case !ack.Multiple && ack.DeliveryTag == acked+1:
			acked++
		default:
			e.T.Fatalf("ack %+v after tags up to %d were acked", ack, acked)
		}
	}
	Equal(e, "last tag", acked, n)
}

func pubConfirmUnroutable(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	e.PublishSync(ch, "amq.direct", e.Name("nobody-bound"), Body("m"))
}

func pubConfirmNoWait(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ConfirmSelect{NoWait: true})
	r.Publish(1, &wire.BasicPublish{RoutingKey: e.Name("nowhere")}, nil, []byte("m"))
	ack := r.Expect(1, &wire.BasicAck{}).(*wire.BasicAck)
	Equal(e, "ack tag", ack.DeliveryTag, 1)
}

func pubConfirmSelectTwice(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	e.Must(ch.ConfirmSelect(e.Ctx), "confirm.select again")
}

func pubConfirmThenTx(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	err := ch.TxSelect(e.Ctx)
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")
}

func pubTxThenConfirm(e *Env) {
	c, ch := e.Open()
	e.Must(ch.TxSelect(e.Ctx), "tx.select")
	err := ch.ConfirmSelect(e.Ctx)
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")
}

func pubConfirmFanout(e *Env) {
	// A confirm for a message routed to several queues waits for all.
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	q1 := e.Queue(ch, "q1", pika.QueueDeclareOptions{})
	q2 := e.Queue(ch, "q2", pika.QueueDeclareOptions{})
	e.Bind(ch, q1, x, "", nil)
	e.Bind(ch, q2, x, "", nil)
	e.PublishSync(ch, x, "", Body("both"))
	e.GetBody(ch, q1, "both")
	e.GetBody(ch, q2, "both")
}

func txCommit(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	tx := e.Chan(c)
	e.Must(tx.TxSelect(e.Ctx), "tx.select")
	e.Publish(tx, "", q, Body("1"))
	e.Publish(tx, "", q, Body("2"))
	e.Must(tx.Qos(e.Ctx, pika.QosOptions{}), "sync")
	e.GetEmpty(ch, q)
	e.Must(tx.TxCommit(e.Ctx), "tx.commit")
	e.GetBody(ch, q, "1")
	e.GetBody(ch, q, "2")
}

func txRollback(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	tx := e.Chan(c)
	e.Must(tx.TxSelect(e.Ctx), "tx.select")
	e.Publish(tx, "", q, Body("discarded"))
	e.Must(tx.TxRollback(e.Ctx), "tx.rollback")
	e.Must(tx.TxCommit(e.Ctx), "tx.commit of an empty transaction")
	e.GetEmpty(ch, q)
	// The channel stays transactional.
	e.Publish(tx, "", q, Body("kept"))
	e.Must(tx.TxCommit(e.Ctx), "tx.commit")
	e.GetBody(ch, q, "kept")
}

func txCommitNotTx(e *Env) {
	c, ch := e.Open()
	err := ch.TxCommit(e.Ctx)
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - channel is not transactional")
}

func txRollbackNotTx(e *Env) {
	c, ch := e.Open()
	err := ch.TxRollback(e.Ctx)
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - channel is not transactional")
}

func txSelectTwice(e *Env) {
	_, ch := e.Open()
	e.Must(ch.TxSelect(e.Ctx), "tx.select")
	e.Must(ch.TxSelect(e.Ctx), "tx.select again")
}

func txAck(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("m"))
	tx := e.Chan(c)
	e.Must(tx.TxSelect(e.Ctx), "tx.select")
	d := e.Get(tx, q)
	e.Must(d.Ack(false), "ack inside the transaction")
	e.Must(tx.TxRollback(e.Ctx), "tx.rollback")
	// The rolled-back ack did not happen: closing the channel requeues.
	e.Must(tx.Close(e.Ctx), "close")
	e.WaitDepth(ch, q, 1)
	d = e.GetBody(ch, q, "m")
	Equal(e, "redelivered", d.Redelivered, true)
}

func txAckCommit(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("m"))
	tx := e.Chan(c)
	e.Must(tx.TxSelect(e.Ctx), "tx.select")
	d := e.Get(tx, q)
	e.Must(d.Ack(false), "ack inside the transaction")
	e.Must(tx.TxCommit(e.Ctx), "tx.commit")
	e.Must(tx.Close(e.Ctx), "close")
	e.GetEmpty(ch, q)
}

func txMandatoryReturn(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.TxSelect{})
	r.Expect(1, &wire.TxSelectOk{})
	r.Publish(1, &wire.BasicPublish{RoutingKey: e.Name("nowhere"), Mandatory: true}, nil, []byte("m"))
	r.Send(1, &wire.TxCommit{})
	// The return is sent at commit, before commit-ok.
	m, _, _ := r.Deliver(1)
	if _, ok := m.(*wire.BasicReturn); !ok {
		e.T.Fatalf("got %v, want basic.return", m)
	}
	r.Expect(1, &wire.TxCommitOk{})
}

func pubProperties(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cfg := e.Config()
	ts := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	p := pika.Properties{
		ContentType: "application/json", ContentEncoding: "gzip",
		Headers:      pika.Table{"k": "v"},
		DeliveryMode: pika.Persistent, Priority: 3, CorrelationID: "corr", ReplyTo: "reply",
		Expiration: "600000", MessageID: "id-1", Timestamp: ts, Type: "kind",
		UserID: cfg.Username, AppID: "app", ClusterID: "cluster",
	}
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Properties: p})
	d := e.GetBody(ch, q, "m")
	got := d.Properties
	got.Flags = 0
	if fmt.Sprint(got) != fmt.Sprint(p) {
		e.T.Fatalf("properties\n got  %+v\n want %+v", got, p)
	}
}

func pubNoProperties(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("m"))
	d := e.GetBody(ch, q, "m")
	Equal(e, "property flags of a message published without properties", d.Flags, 0)
}

func pubHeaderTypes(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	h := pika.Table{
		"bool": true, "int8": int8(-8), "int16": int16(-16), "int32": int32(-32), "int64": int64(-64),
		"float32": float32(1.5), "float64": 2.25, "decimal": pika.Decimal{Scale: 2, Value: 12345},
		"string": "s", "bytes": []byte{0, 1, 2}, "array": []any{int32(1), "two"},
		"time": time.Unix(1700000000, 0).UTC(), "table": pika.Table{"inner": "x"}, "void": nil,
	}
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{Headers: h}})
	d := e.GetBody(ch, q, "m")
	for k, want := range h {
		got, ok := d.Headers[k]
		if !ok || fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", want, want) {
			e.T.Errorf("header %q: got %T %v, want %T %v", k, got, got, want, want)
		}
	}
}

func pubHeaderUnsignedTypes(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	h := pika.Table{"uint8": uint8(8), "uint16": uint16(16), "uint32": uint32(32)}
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{Headers: h}})
	d := e.GetBody(ch, q, "m")
	// RabbitMQ keeps the type octets it does not interpret.
	for k, want := range h {
		got := d.Headers[k]
		if fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", want, want) {
			e.T.Errorf("header %q: got %T %v, want %T %v", k, got, got, want, want)
		}
	}
}

func pubUserIDMismatch(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cfg := e.Config()
	pub := e.Chan(c)
	e.Publish(pub, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{UserID: "not-" + cfg.Username}})
	err := pub.Qos(e.Ctx, pika.QosOptions{})
	e.ChannelClosed(c, pub, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - user_id property set to 'not-%s' but authenticated user was '%s'", cfg.Username, cfg.Username))
	e.GetEmpty(ch, q)
}

func pubEmptyBody(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, nil)
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicGet{Queue: q, NoAck: true})
	// Header with body size 0 and no body frame.
	f := r.Next()
	if _, ok := f.Method.(*wire.BasicGetOk); !ok {
		e.T.Fatalf("got %v, want get-ok", f)
	}
	h := r.Next()
	if h.Header == nil || h.Header.BodySize != 0 {
		e.T.Fatalf("got %v, want a content header with body size 0", h)
	}
	r.Sync(1) // the next frame is the qos-ok: no body frame came
}

func pubLargeBody(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	body := bytes.Repeat([]byte("0123456789abcdef"), 64*1024) // 1 MiB
	e.PublishSync(ch, "", q, pika.Message{Body: body})
	d := e.Get(ch, q)
	if !bytes.Equal(d.Body, body) {
		e.T.Fatalf("1 MiB body came back as %d different bytes", len(d.Body))
	}
}

func pubBodyFramesSplitByBroker(e *Env) {
	r := e.RawDial(4096)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	body := bytes.Repeat([]byte("x"), 10000)
	r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, body)
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicGet{Queue: q, NoAck: true})
	r.Next() // get-ok
	r.Next() // header
	var sizes []int
	for total := 0; total < len(body); {
		f := r.Next()
		if f.Type != wire.FrameBody {
			e.T.Fatalf("got %v, want a body frame", f)
		}
		sizes = append(sizes, len(f.Body))
		total += len(f.Body)
	}
	Equal(e, "body frame sizes", fmt.Sprint(sizes), fmt.Sprint([]int{4088, 4088, 1824}))
}

func pubCC(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	qa := e.Queue(ch, "a", pika.QueueDeclareOptions{})
	qb := e.Queue(ch, "b", pika.QueueDeclareOptions{})
	qc := e.Queue(ch, "c", pika.QueueDeclareOptions{})
	e.Bind(ch, qa, x, "a", nil)
	e.Bind(ch, qb, x, "b", nil)
	e.Bind(ch, qc, x, "c", nil)
	e.PublishSync(ch, x, "a", pika.Message{Body: []byte("m"), Properties: pika.Properties{Headers: pika.Table{
		"CC": []any{"b"}, "BCC": []any{"c"}}}})
	for _, q := range []string{qa, qb, qc} {
		d := e.GetBody(ch, q, "m")
		Equal(e, "routing key", d.RoutingKey, "a")
		if _, ok := d.Headers["CC"]; !ok {
			e.T.Errorf("CC header removed in %s", q)
		}
		if _, ok := d.Headers["BCC"]; ok {
			e.T.Errorf("BCC header kept in %s", q)
		}
	}
}

func pubPersistentTransientQueue(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{DeliveryMode: pika.Persistent}})
	d := e.GetBody(ch, q, "m")
	Equal(e, "delivery mode", d.DeliveryMode, pika.Persistent)
}

func pubRoutingKeyMax(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	key := string(bytes.Repeat([]byte("k"), 255))
	e.Bind(ch, q, x, key, nil)
	e.PublishSync(ch, x, key, Body("m"))
	d := e.GetBody(ch, q, "m")
	Equal(e, "routing key length", len(d.RoutingKey), 255)
}
