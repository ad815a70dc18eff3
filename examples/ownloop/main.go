// Ownloop drives the sans-I/O protocol engine (package engine) over a
// net.Conn with a plain select loop: the way to put AMQP into an event loop
// of one's own. Each step is marked with the rule of the driver contract in
// engine/doc.go that it follows ("contract 1" to "contract 5").
//
// It declares a server-named queue, publishes -n messages with publisher
// confirms, consumes and acknowledges them, heartbeats, and closes:
//
//	go run ./examples/ownloop -n 10
package main

import (
	"cmp"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

func main() {
	n := flag.Int("n", 10, "messages to publish and consume")
	flag.Parse()
	url := cmp.Or(os.Getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/")
	if err := run(url, *n); err != nil {
		fmt.Fprintln(os.Stderr, "ownloop:", err)
		os.Exit(1)
	}
}

// driver owns the engine, the socket and the program's state. Only the
// goroutine running run touches it: the engine needs no lock.
type driver struct {
	eng   *engine.Conn
	nc    net.Conn
	n     int
	ch    uint16 // our channel
	queue string
	// Requests we wait for, by the id Call returned (contract 4).
	declareReq, selectReq, consumeReq engine.RequestID
	confirmed, received               int
	err                               error
}

func run(url string, n int) error {
	// The URL means what it means to pika.Dial; the engine gets the
	// protocol settings (credentials, vhost, heartbeat, ...) from it.
	cfg, err := pika.ParseURL(url)
	if err != nil {
		return err
	}
	nc, err := net.DialTimeout("tcp", cfg.Addr, 10*time.Second) // or tls.Dial for amqps
	if err != nil {
		return err
	}
	defer nc.Close()
	d := &driver{eng: engine.New(cfg.EngineConfig()), nc: nc, n: n}

	// The socket is read by a goroutine of its own; the bytes come to the
	// loop over a channel, so that the loop is one select.
	type read struct {
		b   []byte
		err error
	}
	reads, done := make(chan read), make(chan struct{})
	defer close(done)
	go func() {
		for err := error(nil); err == nil; {
			buf := make([]byte, 64<<10) // fresh: the engine keeps none of it
			var k int
			k, err = nc.Read(buf)
			select {
			case reads <- read{buf[:k], err}:
			case <-done:
				return
			}
		}
	}()

	// contract 1: New, then Start. Start queues the protocol header.
	d.eng.Start(time.Now())
	timer := time.NewTimer(time.Hour)
	for {
		// contract 2: after every call into the engine, write what it
		// queued, take its events, and arm the timer for its deadline.
		d.afterCall()
		if d.eng.IsClosed() {
			break
		}
		if dl := d.eng.Deadline(); !dl.IsZero() {
			timer.Reset(time.Until(dl))
		}
		select {
		case r := <-reads:
			// contract 3: bytes go to Receive; a read error or EOF to Fail.
			d.eng.Receive(r.b)
			if r.err != nil {
				d.eng.Fail(r.err)
			}
		case now := <-timer.C:
			// contract 3: when the timer fires, Tick. This sends heartbeats
			// and notices a silent broker.
			d.eng.Tick(now)
		}
	}
	// contract 5: after EventClosed, the last bytes (afterCall wrote them)
	// and then the socket, closed by the deferred nc.Close.
	return d.err
}

// afterCall is contract 2. Handling an event may call the engine again
// (publish, ack, ...), so it goes round until nothing is left.
func (d *driver) afterCall() {
	for {
		if out := d.eng.AppendOutgoing(nil); len(out) > 0 {
			// A blocking write keeps the example short; a real loop would
			// write what the socket takes and keep the rest.
			d.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := d.nc.Write(out); err != nil {
				d.eng.Fail(err)
			}
		}
		ev, ok := d.eng.NextEvent()
		if !ok {
			return
		}
		d.handle(ev)
	}
}

// handle reacts to one event: this is the application.
func (d *driver) handle(ev engine.Event) {
	switch ev.Kind {
	case engine.EventOpen:
		// The handshake is done. contract 4: requests are calls that
		// return at once; channel.open's reply comes as an event later, but
		// the channel can be used now: requests queue behind the open.
		fmt.Println("connection open")
		d.ch, _, d.err = d.eng.OpenChannel()
		d.declareReq, _ = d.eng.Call(d.ch, &wire.QueueDeclare{Exclusive: true, AutoDelete: true})
		d.selectReq, _ = d.eng.Call(d.ch, &wire.ConfirmSelect{})
	case engine.EventReply:
		switch {
		case ev.Err != nil:
			d.fail(ev.Err)
		case ev.Request == d.declareReq:
			d.queue = ev.Method.(*wire.QueueDeclareOk).Queue
			fmt.Println("declared a server-named queue")
		case ev.Request == d.selectReq:
			// Confirm mode: each Publish returns its delivery tag.
			for i := 1; i <= d.n; i++ {
				body := []byte(fmt.Sprintf("message %d", i))
				if _, err := d.eng.Publish(d.ch, "", d.queue, false, false, &wire.Properties{}, body); err != nil {
					d.fail(err)
					return
				}
			}
			fmt.Printf("published %d messages\n", d.n)
			d.consumeReq, _ = d.eng.Call(d.ch, &wire.BasicConsume{Queue: d.queue})
		}
	case engine.EventConfirm:
		// The broker took the messages up to Tag (Multiple) or just Tag.
		if !ev.Ack {
			d.fail(fmt.Errorf("broker nacked %d messages", ev.Count))
		}
		d.confirmed += ev.Count
		d.maybeClose()
	case engine.EventDelivery:
		d.received++
		if err := d.eng.Ack(d.ch, ev.Message.DeliveryTag, false); err != nil {
			d.fail(err)
		}
		d.maybeClose()
	case engine.EventChannelClosed:
		d.fail(fmt.Errorf("channel closed: %w", ev.Err))
	case engine.EventClosed:
		// contract 5: always the last event. Err is nil after our Close.
		d.err = cmp.Or(d.err, ev.Err)
		fmt.Println("connection closed")
	}
}

// maybeClose closes once every message is confirmed and consumed.
func (d *driver) maybeClose() {
	if d.confirmed == d.n && d.received == d.n && d.eng.IsOpen() {
		fmt.Printf("%d confirmed, %d received and acknowledged\n", d.confirmed, d.received)
		d.eng.Close("done") // EventClosed follows the broker's close-ok
	}
}

func (d *driver) fail(err error) {
	d.err = cmp.Or(d.err, err)
	d.eng.Close(err.Error())
}
