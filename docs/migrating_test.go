package docs_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikamock"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Each function below holds one snippet of MIGRATING.md between a
// "// snippet: NAME" line and a "// end" line; TestMigratingSnippets checks
// that the guide shows it exactly (dedented). The functions are compiled,
// not run: they need a broker.

var ctx = context.Background()

func handle(*pika.Delivery) error { return nil }

func handleAMQP(amqp.Delivery) error { return nil }

// --- Traps ---

func bindAMQP(ch *amqp.Channel) error {
	// snippet: bind-amqp
	// QueueBind(queue, KEY, EXCHANGE, ...); ExchangeBind(destination, KEY, SOURCE, ...)
	if err := ch.QueueBind("orders", "order.created", "events", false, nil); err != nil {
		return err
	}
	if err := ch.ExchangeBind("audit", "order.*", "events", false, nil); err != nil {
		return err
	}
	return ch.QueueUnbind("orders", "order.created", "events", nil)
	// end
}

func bindPika(ch *pika.Channel) error {
	// snippet: bind-pika
	// QueueBind(ctx, queue, EXCHANGE, KEY, ...); ExchangeBind(ctx, destination, SOURCE, KEY, ...)
	if err := ch.QueueBind(ctx, "orders", "events", "order.created", pika.BindOptions{}); err != nil {
		return err
	}
	if err := ch.ExchangeBind(ctx, "audit", "events", "order.*", pika.BindOptions{}); err != nil {
		return err
	}
	return ch.QueueUnbind(ctx, "orders", "events", "order.created", pika.BindOptions{})
	// end
}

func reconnectAMQP(url string) {
	// snippet: reconnect-amqp
	for {
		conn, err := amqp.Dial(url)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		// ... open channels, declare, consume again ...
		log.Printf("connection lost: %v; reconnecting", <-closed)
	}
	// end
}

func reconnectPika(url string) error {
	// snippet: reconnect-pika
	conn, err := pika.Dial(ctx, url) // recovery is on: no loop to write
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	conn.OnRecovery(func(ev pika.RecoveryEvent) {
		log.Printf("recovery: %v (%v)", ev.Kind, ev.Err) // lost, attempt, recovered, gave up
	})
	conn.OnClose(func(err error) {
		// Only when the connection is gone for good: Close (err nil), or
		// recovery gave up or was not allowed (Config.DisableRecovery).
		log.Printf("connection closed: %v", err)
	})
	// end
	return nil
}

func heartbeatAMQP(url string) (*amqp.Connection, error) {
	// snippet: heartbeat-amqp
	return amqp.DialConfig(url, amqp.Config{Heartbeat: 10 * time.Second}) // also the default
	// end
}

func heartbeatPika() (*pika.Conn, error) {
	// snippet: heartbeat-pika
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/") // ?heartbeat=0 disables
	if err != nil {
		return nil, err
	}
	cfg.Heartbeat = 10 * time.Second // pika.DefaultHeartbeat; pika.NoHeartbeat disables
	return pika.DialConfig(ctx, cfg)
	// end
}

func consumeAMQP(ch *amqp.Channel) error {
	// snippet: consume-amqp
	msgs, err := ch.Consume("tasks", "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	for d := range msgs { // ends when the channel closes; the reason is elsewhere
		if err := handleAMQP(d); err != nil {
			d.Nack(false, true)
			continue
		}
		d.Ack(false)
	}
	// end
	return nil
}

func consumePika(ch *pika.Channel) error {
	// snippet: consume-pika
	cons, err := ch.Consume(ctx, "tasks", pika.ConsumeOptions{})
	if err != nil {
		return err
	}
	for d, err := range cons.All(ctx) {
		if err != nil {
			return err // why the consumer ended (nothing when you cancelled it)
		}
		if err := handle(d); err != nil {
			d.Nack(false, true)
			continue
		}
		d.Ack(false)
	}
	return nil
	// end
}

func consumeFuncPika(ch *pika.Channel) error {
	// snippet: consumefunc-pika
	cons, err := ch.ConsumeFunc(ctx, "tasks", pika.ConsumeOptions{}, func(ctx context.Context, d *pika.Delivery) {
		// ctx ends when the consumer ends: use it for the work the delivery starts.
		if err := handle(d); err != nil {
			d.Nack(false, true)
			return
		}
		d.Ack(false)
	})
	if err != nil {
		return err
	}
	<-cons.Done() // after cons.Cancel(ctx), a broker cancel or a close
	return cons.Err()
	// end
}

func staleTagPika(d *pika.Delivery) error {
	// snippet: stale-pika
	switch err := d.Ack(false); {
	case errors.Is(err, pika.ErrStaleDelivery):
		// Delivered before a recovery: the broker has requeued it and will
		// deliver it again. Nothing was sent; the channel stays open.
		return nil
	case err != nil:
		return err
	}
	return nil
	// end
}

func errorsAMQP(ch *amqp.Channel) error {
	// snippet: errors-amqp
	_, err := ch.QueueDeclarePassive("orders", false, false, false, false, nil)
	var e *amqp.Error
	if errors.As(err, &e) && e.Code == amqp.NotFound {
		log.Printf("no queue: %s", e.Reason)
	}
	// end
	return err
}

func errorsPika(ch *pika.Channel) error {
	// snippet: errors-pika
	_, err := ch.QueueDeclarePassive(ctx, "orders")
	if errors.Is(err, pika.ErrNotFound) { // one sentinel per reply code
		var e *pika.Error
		errors.As(err, &e)
		log.Printf("no queue: %s (channel %d closed; retryable: %v)", e.Text, e.Channel, e.Retryable())
	}
	// end
	return err
}

// --- Call by call ---

func connectAMQP(url string) error {
	// snippet: connect-amqp
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	// end
	return nil
}

func connectPika(url string) error {
	// snippet: connect-pika
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close(ctx)
	// end
	return nil
}

func tlsAMQP(url string, tc *tls.Config) (*amqp.Connection, error) {
	// snippet: tls-amqp
	return amqp.DialTLS(url, tc)
	// end
}

func tlsPika(url string, tc *tls.Config) (*pika.Conn, error) {
	// snippet: tls-pika
	cfg, err := pika.ParseURL(url) // amqps://...; or the cacertfile/certfile/keyfile options
	if err != nil {
		return nil, err
	}
	cfg.TLS = tc
	return pika.DialConfig(ctx, cfg)
	// end
}

func declareAMQP(ch *amqp.Channel) error {
	// snippet: declare-amqp
	q, err := ch.QueueDeclare("tasks", true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	if err != nil {
		return err
	}
	err = ch.ExchangeDeclare("events", "topic", true, false, false, false, nil)
	if err != nil {
		return err
	}
	err = ch.ExchangeDeclarePassive("events", "topic", true, false, false, false, nil)
	if err != nil {
		return err
	}
	_, err = ch.QueueDelete(q.Name, false, false, false)
	// end
	return err
}

func declarePika(ch *pika.Channel) error {
	// snippet: declare-pika
	args, err := pika.QueueArgs{Type: pika.QueueQuorum}.Table() // or a pika.Table
	if err != nil {
		return err
	}
	q, err := ch.QueueDeclare(ctx, "tasks", pika.QueueDeclareOptions{Durable: true, Arguments: args})
	if err != nil {
		return err
	}
	err = ch.ExchangeDeclare(ctx, "events", pika.ExchangeTopic, pika.ExchangeDeclareOptions{Durable: true})
	if err != nil {
		return err
	}
	err = ch.ExchangeDeclarePassive(ctx, "events") // no kind
	if err != nil {
		return err
	}
	_, err = ch.QueueDelete(ctx, q.Name, pika.QueueDeleteOptions{})
	// end
	return err
}

func publishAMQP(ch *amqp.Channel, body []byte) error {
	// snippet: publish-amqp
	return ch.PublishWithContext(ctx, "events", "order.created", true, false, amqp.Publishing{
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		CorrelationId: "c-1",
		MessageId:     "m-1",
		Body:          body,
	})
	// end
}

func publishPika(ch *pika.Channel, body []byte) error {
	// snippet: publish-pika
	return ch.Publish(ctx, "events", "order.created", pika.Message{
		Mandatory: true, // immediate does not exist (RabbitMQ refuses it)
		Properties: pika.Properties{
			ContentType:   "application/json",
			DeliveryMode:  pika.Persistent,
			CorrelationID: "c-1", // ID, not Id
			MessageID:     "m-1",
		},
		Body: body,
	})
	// end
}

func confirmAMQP(ch *amqp.Channel, body []byte) error {
	// snippet: confirm-amqp
	if err := ch.Confirm(false); err != nil {
		return err
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", "tasks", true, false, amqp.Publishing{Body: body})
	if err != nil {
		return err
	}
	acked, err := dc.WaitContext(ctx) // a returned mandatory message is still "acked"
	if err == nil && !acked {
		err = errors.New("nacked")
	}
	// end
	return err
}

func confirmPika(ch *pika.Channel, body []byte) error {
	// snippet: confirm-pika
	if err := ch.ConfirmSelect(ctx); err != nil {
		return err
	}
	conf, err := ch.PublishWithConfirm(ctx, "", "tasks", pika.Message{Mandatory: true, Body: body})
	if err != nil {
		return err
	}
	// nil only when the broker took it; else ErrNacked, a *ReturnedError
	// (errors.Is ErrReturned), ErrMaybeReturned or ErrOutcomeUnknown.
	err = conf.Wait(ctx)
	// end
	return err
}

func notifyAMQP(ch *amqp.Channel) {
	// snippet: notify-amqp
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 100)) // must be drained, or the connection stalls
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	go func() {
		for c := range confirms {
			log.Printf("tag %d ack %v", c.DeliveryTag, c.Ack)
		}
	}()
	go func() {
		for r := range returns {
			log.Printf("returned: %s", r.Body)
		}
	}()
	// end
}

func notifyPika(ch *pika.Channel) {
	// snippet: notify-pika
	stopConfirms := ch.OnConfirm(func(c pika.ConfirmEvent) { // runs on a goroutine of the library's; never stalls the connection
		log.Printf("tag %d ack %v (%d messages, %d returned)", c.Tag, c.Ack, c.Count, c.Returned)
	})
	defer stopConfirms() // every OnX returns its unregister function
	ch.OnReturn(func(r *pika.Return) {
		log.Printf("returned: %s", r.Body)
	})
	// end
}

func qosGetAMQP(ch *amqp.Channel) error {
	// snippet: qos-get-amqp
	if err := ch.Qos(10, 0, false); err != nil {
		return err
	}
	d, ok, err := ch.Get("tasks", false)
	if err != nil || !ok {
		return err
	}
	return d.Ack(false)
	// end
}

func qosGetPika(ch *pika.Channel) error {
	// snippet: qos-get-pika
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 10}); err != nil {
		return err
	}
	d, ok, err := ch.Get(ctx, "tasks", pika.GetOptions{}) // GetOptions{AutoAck: true} for no-ack
	if err != nil || !ok {
		return err
	}
	return d.Ack(false)
	// end
}

func cancelAMQP(ch *amqp.Channel) error {
	// snippet: cancel-amqp
	return ch.Cancel("my-consumer", false)
	// end
}

func cancelPika(cons *pika.Consumer) error {
	// snippet: cancel-pika
	return cons.Cancel(ctx) // buffered deliveries stay takeable with Next
	// end
}

// snippet: test-amqp
type ackRecorder struct{ acked []uint64 }

func (r *ackRecorder) Ack(tag uint64, multiple bool) error {
	r.acked = append(r.acked, tag)
	return nil
}
func (r *ackRecorder) Nack(tag uint64, multiple, requeue bool) error { return nil }
func (r *ackRecorder) Reject(tag uint64, requeue bool) error         { return nil }

func testAMQP() {
	d := amqp.Delivery{Acknowledger: &ackRecorder{}, DeliveryTag: 1, Body: []byte("x")}
	handleAMQP(d)
}

// end

func testPika() []pikamock.Call {
	// snippet: test-pika
	var acks pikamock.Recorder
	d := acks.Delivery(1, []byte("x")) // or &pika.Delivery{Acknowledger: yourOwn, ...}
	handle(d)
	return acks.Calls() // e.g. []pikamock.Call{pikamock.AckOf(1)}
	// end
}

// --- Python Pika ---

func helloPython(url string) error {
	// snippet: python-hello-pika
	conn, err := pika.Dial(ctx, url) // BlockingConnection(URLParameters(url))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)        // connection.close()
	ch, err := conn.Channel(ctx) // connection.channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(ctx, "hello", pika.QueueDeclareOptions{Durable: true}); err != nil {
		return err
	}
	return ch.Publish(ctx, "", "hello", pika.Message{ // basic_publish(exchange="", routing_key="hello", ...)
		Properties: pika.Properties{DeliveryMode: pika.Persistent},
		Body:       []byte("Hello World!"),
	})
	// end
}

func consumePython(ch *pika.Channel) error {
	// snippet: python-consume-pika
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 1}); err != nil { // basic_qos(prefetch_count=1)
		return err
	}
	// basic_consume(queue="hello", on_message_callback=callback) + start_consuming()
	cons, err := ch.ConsumeFunc(ctx, "hello", pika.ConsumeOptions{}, func(ctx context.Context, d *pika.Delivery) {
		// callback(ch, method, properties, body): method.delivery_tag is
		// d.DeliveryTag, properties is d.Properties, body is d.Body.
		fmt.Printf("received %s\n", d.Body)
		d.Ack(false) // ch.basic_ack(delivery_tag=method.delivery_tag)
	})
	if err != nil {
		return err
	}
	<-cons.Done() // start_consuming() blocks the same way; cons.Cancel(ctx) is stop_consuming()
	return cons.Err()
	// end
}

func confirmPython(ch *pika.Channel) error {
	// snippet: python-confirm-pika
	if err := ch.ConfirmSelect(ctx); err != nil { // channel.confirm_delivery()
		return err
	}
	conf, err := ch.PublishWithConfirm(ctx, "", "hello", pika.Message{Mandatory: true, Body: []byte("x")})
	if err != nil {
		return err
	}
	switch err := conf.Wait(ctx); {
	case errors.Is(err, pika.ErrReturned): // pika.exceptions.UnroutableError
		return err
	case errors.Is(err, pika.ErrNacked): // pika.exceptions.NackError
		return err
	default:
		return err
	}
	// end
}
