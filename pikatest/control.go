package pikatest

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/pika-go/pika/wire"
)

// This file is the control API a test uses: inspection of queues and
// connections, fault injection (closing, cutting and stalling connections,
// the memory alarm, confirm delays, restarts) and waiting for conditions.

// ConfirmPolicy changes how the broker answers publisher confirms; the
// zero value confirms every publish at once, as RabbitMQ does for
// transient messages.
type ConfirmPolicy struct {
	// Delay holds each confirm back for this long.
	Delay time.Duration
	// Drop never sends the confirms of publishes received while set.
	Drop bool
	// Nack answers with basic.nack instead of basic.ack.
	Nack bool
}

// SetConfirmPolicy applies p to publishes received from now on.
func (b *Broker) SetConfirmPolicy(p ConfirmPolicy) {
	b.mu.Lock()
	b.confirm = p
	b.unlock()
}

// QueueInfo describes a queue.
type QueueInfo struct {
	Name       string
	VHost      string
	Durable    bool
	Exclusive  bool
	AutoDelete bool
	Arguments  wire.Table
	Messages   int   // ready messages
	Unacked    int   // delivered and not yet settled
	Bytes      int64 // body bytes of the ready messages
	Consumers  int
}

// Message is a message as it sits in a queue.
type Message struct {
	Exchange    string
	RoutingKey  string
	Properties  wire.Properties
	Body        []byte
	Redelivered bool
}

func (q *queue) info() QueueInfo {
	return QueueInfo{Name: q.name, VHost: q.vh.name, Durable: q.durable, Exclusive: q.exclusive,
		AutoDelete: q.autoDelete, Arguments: q.args, Messages: q.ready.Len(), Unacked: q.unacked,
		Bytes: q.ready.Bytes(), Consumers: len(q.consumers)}
}

// Queue returns the queue name of the virtual host "/" (or the first
// configured virtual host); ok is false if it does not exist.
func (b *Broker) Queue(name string) (info QueueInfo, ok bool) {
	return b.QueueIn(b.cfg.VHosts[0], name)
}

// QueueIn is [Broker.Queue] for a given virtual host.
func (b *Broker) QueueIn(vhost, name string) (QueueInfo, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	vh := b.vhosts[vhost]
	if vh == nil || vh.queues[name] == nil {
		return QueueInfo{}, false
	}
	return vh.queues[name].info(), true
}

// Queues returns every queue of every virtual host, sorted by virtual host
// and name.
func (b *Broker) Queues() []QueueInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []QueueInfo
	for _, vh := range b.vhosts {
		for _, q := range vh.sortedQueues() {
			out = append(out, q.info())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VHost != out[j].VHost {
			return out[i].VHost < out[j].VHost
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Messages returns copies of the ready messages of queue name (in the
// first virtual host) in delivery order, or nil if there is no such queue.
func (b *Broker) Messages(name string) []Message {
	return b.MessagesIn(b.cfg.VHosts[0], name)
}

// MessagesIn is [Broker.Messages] for a given virtual host.
func (b *Broker) MessagesIn(vhost, name string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	vh := b.vhosts[vhost]
	if vh == nil || vh.queues[name] == nil {
		return nil
	}
	q := vh.queues[name]
	var out []Message
	for _, m := range q.ready.All() {
		out = append(out, Message{Exchange: m.Exchange, RoutingKey: m.RoutingKey, Properties: m.Props,
			Body: append([]byte(nil), m.Body...), Redelivered: m.Redelivered})
	}
	return out
}

// ExchangeInfo describes an exchange.
type ExchangeInfo struct {
	Name       string
	VHost      string
	Type       string
	Durable    bool
	AutoDelete bool
	Internal   bool
	Arguments  wire.Table
	Bindings   int // bindings with this exchange as their source
}

// Exchange returns the exchange name of the first virtual host.
func (b *Broker) Exchange(name string) (ExchangeInfo, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	vh := b.vhosts[b.cfg.VHosts[0]]
	x := vh.exchanges[name]
	if x == nil {
		return ExchangeInfo{}, false
	}
	return ExchangeInfo{Name: x.name, VHost: vh.name, Type: x.kind, Durable: x.durable, AutoDelete: x.autoDelete,
		Internal: x.internal, Arguments: x.args, Bindings: len(x.bindings)}, true
}

// ConnInfo describes a client connection.
type ConnInfo struct {
	ID       uint64 // the broker's number for it, for CloseConnection and friends
	Name     string // the client-provided connection_name, if any
	User     string
	VHost    string
	Remote   string
	Channels int
	Client   wire.Table // the client properties
}

// Connections returns the open (handshaken) connections by ID.
func (b *Broker) Connections() []ConnInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []ConnInfo
	for c := range b.conns {
		if !c.open {
			continue
		}
		out = append(out, ConnInfo{ID: c.id, Name: c.name, User: c.user, VHost: c.vh.name,
			Remote: c.nc.RemoteAddr().String(), Channels: len(c.channels), Client: c.props})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (b *Broker) findConn(id uint64) *conn {
	for c := range b.conns {
		if c.id == id {
			return c
		}
	}
	return nil
}

// ErrNoConnection is returned for a connection ID the broker does not
// know (or that has already closed).
var ErrNoConnection = errors.New("pikatest: no such connection")

// CloseConnection closes connection id the way `rabbitmqctl
// close_connection` does: connection.close with 320 CONNECTION_FORCED and
// reason as the text. It returns [ErrNoConnection] for a connection that
// is unknown or already closing.
func (b *Broker) CloseConnection(id uint64, reason string) error {
	b.mu.Lock()
	defer b.unlock()
	c := b.findConn(id)
	if c == nil || c.gone || c.closing {
		return ErrNoConnection
	}
	c.fail(connErr(wire.ReplyConnectionForced, "%s", reason))
	return nil
}

// CloseConnections closes every connection with 320 CONNECTION_FORCED.
func (b *Broker) CloseConnections(reason string) {
	b.mu.Lock()
	defer b.unlock()
	for c := range b.conns {
		c.fail(connErr(wire.ReplyConnectionForced, "%s", reason))
	}
}

// CutConnection closes connection id's socket without any AMQP close, as
// a network failure or a crashed broker would.
func (b *Broker) CutConnection(id uint64) error {
	b.mu.Lock()
	c := b.findConn(id)
	b.mu.Unlock()
	if c == nil {
		return ErrNoConnection
	}
	c.cut()
	return nil
}

// CutConnections cuts every connection.
func (b *Broker) CutConnections() {
	b.mu.Lock()
	conns := b.connList()
	b.mu.Unlock()
	for _, c := range conns {
		c.cut()
	}
}

// StallConnection stops the broker from reading from and writing to
// connection id (heartbeats included) while the socket stays open, as a
// hung broker or a black-holed network would. Call the returned function
// to resume; it is idempotent.
func (b *Broker) StallConnection(id uint64) (resume func(), err error) {
	b.mu.Lock()
	c := b.findConn(id)
	b.mu.Unlock()
	if c == nil {
		return nil, ErrNoConnection
	}
	c.stallMu.Lock()
	if c.stall == nil {
		c.stall = make(chan struct{})
	}
	s := c.stall
	c.stallMu.Unlock()
	return func() {
		c.stallMu.Lock()
		if c.stall == s {
			close(s)
			c.stall = nil
		}
		c.stallMu.Unlock()
		c.signal()
	}, nil
}

// SetAlarm raises (true) or clears (false) a memory alarm, as RabbitMQ's:
// a connection that publishes while it is on is no longer read from (its
// later methods wait too) and, if it announced the connection.blocked
// capability, gets connection.blocked ("low on memory"); connections that
// do not publish carry on. Clearing the alarm sends connection.unblocked to
// the blocked connections and resumes them, the held publish first.
func (b *Broker) SetAlarm(on bool) {
	b.mu.Lock()
	defer b.unlock()
	if b.alarm == on {
		return
	}
	b.alarm = on
	if on {
		return
	}
	for c := range b.conns {
		if c.blockedSent {
			c.blockedSent = false
			if !c.closing && !c.gone {
				c.send(0, &wire.ConnectionUnblocked{})
			}
		}
	}
}

// Restart simulates a broker restart: every connection is closed with 320
// CONNECTION_FORCED ("broker forced connection closure with reason
// 'shutdown'"), non-durable exchanges and queues disappear, durable queues
// keep their persistent messages (unacked ones come back as redelivered)
// and lose transient ones. The broker listens again at once on the same
// address; use [Broker.Stop] and [Broker.Start] for a broker that is down
// for a while.
func (b *Broker) Restart() {
	b.Stop()
	b.Start()
}

// Stop takes the broker down like `rabbitmqctl stop_app`: connections are
// closed with 320 CONNECTION_FORCED, the listener closes (new connections
// are refused) and the non-durable state is lost. Start brings it back.
func (b *Broker) Stop() {
	b.mu.Lock()
	if b.stopped || b.closed {
		b.mu.Unlock()
		return
	}
	b.stopped = true
	ln := b.ln
	for c := range b.conns {
		c.fail(connErr(wire.ReplyConnectionForced, "broker forced connection closure with reason 'shutdown'"))
		// As RabbitMQ does on shutdown, close the socket without waiting
		// for close-ok: ending the reader makes the writer flush the
		// close and close the socket.
		_ = c.nc.SetReadDeadline(time.Now())
	}
	b.unlock()
	ln.Close()
	b.acceptWG.Wait()
	// Wait for the connections to end so their unacked messages are back.
	b.connWG.Wait()
	b.mu.Lock()
	for _, vh := range b.vhosts {
		vh.restart()
	}
	b.replies = nil
	b.unlock()
}

// Start brings a stopped broker back on the same address. It fails if the
// address cannot be bound again.
func (b *Broker) Start() error {
	b.mu.Lock()
	if !b.stopped || b.closed {
		b.mu.Unlock()
		return nil
	}
	addr := b.addr
	b.mu.Unlock()
	var err error
	for i := 0; i < 50; i++ {
		if err = b.listen(addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// restart keeps what survives a broker restart.
func (vh *vhost) restart() {
	for name, x := range vh.exchanges {
		if !x.durable {
			vh.removeExchange(x)
			delete(vh.exchanges, name)
		}
	}
	for _, q := range vh.sortedQueues() {
		if !q.durable || q.exclusive {
			vh.deleteQueue(q)
			continue
		}
		msgs := q.ready.All()
		q.ready.Purge()
		for _, m := range msgs {
			// Quorum queues persist every message, whatever its delivery mode.
			if m.Persistent() || q.qtype == "quorum" {
				q.ready.Requeue(m)
			}
		}
		q.consumers, q.rr, q.unacked = nil, 0, 0
	}
	vh.addDefaultExchanges()
}

// Wait blocks until cond returns true or ctx ends. cond is called at once
// and again after every change of the broker's state (never while the
// broker's lock is held), so it may call the inspection methods. It
// returns ctx.Err() when ctx ends first.
func (b *Broker) Wait(ctx context.Context, cond func() bool) error {
	w := make(chan struct{}, 1)
	b.mu.Lock()
	b.waiters[w] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiters, w)
		b.mu.Unlock()
	}()
	for {
		if cond() {
			return nil
		}
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitQueue waits until queue name exists and cond holds for it, and
// returns its last state. A nil cond waits for the queue to exist.
func (b *Broker) WaitQueue(ctx context.Context, name string, cond func(QueueInfo) bool) (QueueInfo, error) {
	var info QueueInfo
	err := b.Wait(ctx, func() bool {
		var ok bool
		info, ok = b.Queue(name)
		return ok && (cond == nil || cond(info))
	})
	return info, err
}

// WaitConnections waits until cond holds for the open connections.
func (b *Broker) WaitConnections(ctx context.Context, cond func([]ConnInfo) bool) ([]ConnInfo, error) {
	var conns []ConnInfo
	err := b.Wait(ctx, func() bool {
		conns = b.Connections()
		return cond(conns)
	})
	return conns, err
}
