// Package pika is an AMQP 0-9-1 client for RabbitMQ and other 0-9-1 brokers.
//
// It is the default client of this module: goroutines and a [net.Conn]
// driving the sans-I/O protocol engine of package
// [github.com/pika-go/pika/engine]. A [Conn] is a connection to a broker; a
// [Channel] is the unit on which exchanges and queues are declared and
// messages are published ([Channel.Publish]), consumed ([Channel.Consume],
// [Channel.ConsumeFunc]) and fetched ([Channel.Get]). Every call that can
// block takes a [context.Context] first.
//
// # Quick start
//
//	ctx := context.Background()
//	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
//	if err != nil {
//		return err
//	}
//	defer conn.Close(ctx)
//
//	ch, err := conn.Channel(ctx)
//	if err != nil {
//		return err
//	}
//	q, err := ch.QueueDeclare(ctx, "hello", pika.QueueDeclareOptions{})
//	if err != nil {
//		return err
//	}
//	err = ch.Publish(ctx, "", q.Name, pika.Message{
//		Properties: pika.Properties{ContentType: "text/plain"},
//		Body:       []byte("Hello, World!"),
//	})
//	if err != nil {
//		return err
//	}
//
//	cons, err := ch.Consume(ctx, q.Name, pika.ConsumeOptions{})
//	if err != nil {
//		return err
//	}
//	d, err := cons.Next(ctx) // or: for d, err := range cons.All(ctx) { ... }
//	if err != nil {
//		return err
//	}
//	fmt.Printf("%s\n", d.Body)
//	return d.Ack(false)
//
// The URL syntax, with TLS (amqps) and query options, is described at
// [ParseURL]; [DialConfig] takes a [Config] instead. The examples directory
// of the repository has a runnable program for each common pattern: work
// queues, publish/subscribe, routing, topics, RPC over direct reply-to,
// publisher confirms, TLS, automatic recovery, and the engine driven by a
// loop of your own.
//
// # Concurrency
//
// [Conn], [Channel], [Consumer] and [Confirmation] are safe for concurrent
// use by many goroutines. Concurrent synchronous calls on one channel each
// get their own reply (the channel has one request on the wire at a time and
// queues the others in order), and the frames of one published message are
// never interleaved with another's.
//
// Each network connection is served by two goroutines of the library: a
// reader that feeds the socket's bytes to the engine and a writer that sends
// everything queued since its last write in one write call (so that many
// goroutines publishing at once share system calls). A timer
// ([time.AfterFunc], no goroutine while it waits) handles heartbeats and
// timeouts. They hold the connection's lock only around engine calls, never
// during I/O and never while application code runs.
// Every piece of application code the library calls runs on a goroutine of
// the library's that holds no lock: notification callbacks and consumer
// handlers (below), the handler of [Config].Logger (log records are queued
// and handed to it by a goroutine of their own), and SASL mechanisms of
// [Config].Mechanisms (each step runs on a goroutine of its own while the
// handshake timer keeps running; a step still running when
// [Config].HandshakeTimeout ends is abandoned).
//
// Notifications never stall the connection. Callbacks registered with
// [Conn.OnClose], [Conn.OnBlocked], [Conn.OnRecovery], [Channel.OnReturn],
// [Channel.OnConfirm], [Channel.OnClose], [Channel.OnCancel],
// [Channel.OnFlow] and [Channel.OnOrphanDelivery] run in order on a goroutine
// of the library's (one per connection, and one per channel, started when
// there is something to run); a slow or blocked callback delays only later
// callbacks of the same connection or channel, never the reader. A callback
// may call the Conn and its Channels. A [Channel.ConsumeFunc] handler runs
// on a goroutine of its consumer's own, so a slow handler delays only that
// consumer's deliveries (see the next section).
//
// Notifications waiting for their callbacks are bounded by
// [Config].NotifyBuffer (default [DefaultNotifyBuffer], 1,024) per channel
// and per connection. The pressure goes to whoever causes more of them,
// never to the reader, which always queues what the broker sent: while a
// channel's queue is full, [Channel.Publish] and
// [Channel.PublishWithConfirm] on that channel wait (honouring ctx) before
// sending, since each publish can bring a return or a confirmation; while
// the connection's queue is full, recovery waits before its next attempt.
// Notifications of messages already published still join a full queue, so
// it can exceed the bound by the notifications of the messages that were in
// flight when it filled (in the write buffer, on the network or in the
// broker): with a fast publisher of small messages, thousands. The bound
// stops the growth; the write buffer limit bounds the overshoot's size only
// loosely. Publishing from a callback never waits for a notification queue
// (it could be waiting for itself).
//
// The Logger's handler is called the same way: a slow handler delays only
// logging. When it falls more than 4,096 records (or about 4 MiB of decoded
// frames) behind, further records are dropped and a Warn record says how
// many. [Conn.Close] waits, within its ctx, until the queued records are
// handled.
//
// # Callbacks
//
// Every OnX registration returns a function that unregisters the callback:
//
//	stop := ch.OnReturn(func(r *pika.Return) { ... })
//	defer stop()
//
// Unregistering is idempotent and may be called from any goroutine,
// including from a callback (its own or another's). Once it returns, the
// callback is never started again: notifications already queued for it
// and not yet started are dropped, not delivered late. A call already
// running (the one that unregisters itself, or one started on the
// callbacks' goroutine an instant before) is not interrupted, and
// unregistering does not wait for it. Other callbacks registered for the
// same notification are unaffected, and a callback registered twice is two
// registrations, each with its own function.
//
// [Conn.OnClose] and [Channel.OnClose] follow one rule: f receives nil when
// the application asked for the close and the cause otherwise, the value
// [Conn.Err] or [Channel.Err] returns afterwards. A channel closed by
// [Conn.Close] of its connection was closed by the application too: its
// OnClose receives nil, like the connection's. (Calls made on it afterwards
// fail with [ErrClosed].)
//
// # Memory bounds for consumers
//
// The design rule: nothing the application did not ask for stalls the
// connection; only the slow consumer's deliveries wait. While a consumer
// falls behind, the replies, publisher confirmations, returns, cancels,
// closes and heartbeats of every channel of the connection keep flowing,
// so an RPC, a [Confirmation.Wait] or a [Channel.Close] never waits for a
// consumer — not even when called from that consumer's own handler.
//
// Deliveries wait in a per-consumer buffer until the application takes them
// with [Consumer.Next] or [Consumer.All], or the [Channel.ConsumeFunc]
// handler returns. [Consumer.Stats] reports its size, its high-water mark
// and what the policies below did. What bounds it depends on the consumer.
// (To take the connection's lock once per batch rather than once per
// delivery, a Next call that finds nothing on the consumer's side moves
// everything buffered there at once, and the following calls hand it out
// without the lock. Those deliveries still count as buffered, in the
// figures and against the limits below, until Next returns them, and
// they are dropped with the rest of the buffer when the channel closes or
// the connection is lost.)
//
// Manual acknowledgements on a channel with a prefetch count
// ([Channel.Qos], per consumer before Consume, or global): the broker never
// has more than the prefetch count of unacknowledged deliveries out, so the
// buffer holds at most prefetch count × message size ([Config].MaxBodySize
// at worst). The buffer takes all of it, whatever
// [ConsumeOptions].BufferSize says, and the connection never waits for
// such a consumer. This is the recommended setup.
//
// AutoAck (the prefetch count does not limit it), or manual
// acknowledgements without a prefetch count: the buffer has a soft limit of
// [ConsumeOptions].BufferSize deliveries (default [DefaultConsumerBuffer],
// 1024) or [ConsumeOptions].BufferBytes body bytes (default
// [DefaultConsumerBufferBytes], 64 MiB), whichever comes first, and
// [ConsumeOptions].Overflow says what happens there:
//
//   - [ConsumerSuspend]: the library cancels the consumer at the broker
//     (basic.cancel) and starts it again with the same tag and options once
//     the application has taken the buffer down to half the limit. The
//     queue keeps the messages meanwhile (other consumers may take them);
//     nothing is lost, and the connection goes on reading. The buffer holds
//     at most the soft limit plus what the broker had sent before it
//     processed the cancel ([ConsumerStats].SuspendOverrun; against
//     RabbitMQ 3.10 on loopback, up to a few hundred small messages).
//   - [ConsumerDiscard]: the consumer keeps running, and the connection's
//     reader pauses — the broker does not honour a client's channel.flow,
//     so TCP back-pressure is the only other brake on such a flood — but
//     only while nothing is awaited on the connection: no reply to a
//     request, no publisher confirmation, no close. Anything awaited lets
//     the reader go on at once; it pauses again once nothing is awaited,
//     and for good once the application has taken the buffer down to half
//     the limit. (Events nobody awaits — a return of a message published
//     outside confirm mode, a broker's cancel or channel close,
//     connection.blocked — wait while it pauses; heartbeats keep the
//     connection alive, as the broker's bytes waiting in the socket count
//     as a sign of life.) While the reader goes on, the buffer grows to
//     twice the limits (the hard limit); past it, an AutoAck delivery is
//     dropped (lost: the broker considered it delivered) and a manual-ack
//     one is rejected with requeue (the broker delivers it again later),
//     each counted in [ConsumerStats] and logged at Warn level once per
//     episode. The buffer never holds more than the hard limit, plus the
//     deliveries of one read of the socket (at most 128 KiB) when the reader
//     is about to pause, and plus those that arrive after the application
//     called [Consumer.Cancel] or a Close (what the broker had already
//     sent).
//   - [ConsumerOverflowAuto], the default: [ConsumerSuspend] when that is
//     known to be safe — the queue was declared through this Conn and is
//     not auto-delete (cancelling the last consumer of an auto-delete queue
//     deletes it), and the consumer is not exclusive (another consumer
//     could take the queue meanwhile) — and [ConsumerDiscard] otherwise.
//     Direct reply-to ("amq.rabbitmq.reply-to") always gets
//     [ConsumerDiscard], as its replies need the consumer; they are at most
//     as many as the requests outstanding.
//
// Publishing is bounded too: [Channel.Publish] waits while more than
// [Config].WriteBufferLimit bytes (default 1 MiB) wait for the socket,
// counting the messages queued on a channel behind a synchronous request
// still waiting for its reply (they keep the channel's order), and while
// its channel's notification queue is full (see Concurrency).
// [Config].MaxBodySize bounds the size of a message body accepted from the
// broker.
//
// # Inline handlers
//
// A [Channel.ConsumeFunc] handler normally runs on a goroutine of its
// consumer's own, so that a slow handler delays only that consumer. With
// [ConsumeOptions].Inline the handler runs on the connection's reader
// goroutine instead, right after the socket read that brought its
// deliveries and before the next read, without any lock of the library
// held. That saves a goroutine wake-up per read (the broker sends about ten
// small messages per read) and makes consuming markedly cheaper in CPU
// (see BENCHMARKS.md). Deliveries are buffered and bounded exactly as for
// any consumer, and the handler is called one delivery at a time, in
// order.
//
// The contract: an inline handler must return quickly and must not wait
// for anything the broker sends. Acknowledging ([Delivery.Ack], Nack,
// Reject) and [Channel.Publish] are fine (Publish may wait only while the
// connection is blocked by the broker, paused by channel.flow, its write
// buffer is full, or [Config].MaxUnconfirmed is reached — avoid those
// setups, or pass a ctx with a deadline). While an inline handler runs,
// nothing is read from the connection: the deliveries, replies, publisher
// confirmations, returns and closes of every channel of the connection
// wait, and the other inline handlers wait too. A handler that calls
// something waiting for the broker's answer — [Channel.Qos],
// [Consumer.Cancel], [Confirmation.Wait], [Channel.WaitConfirms],
// [Channel.Close], any declaration — waits for a reply that cannot be read
// until it returns: the call ends only with its ctx (and then fails with
// ctx.Err()), after which the connection carries on. [Conn.Close] from a
// handler likewise ends with its ctx (or [Config].CloseTimeout) without the
// broker's close-ok; it does not wait for the reader goroutine it runs on,
// which ends when the handler returns. A handler that blocks
// for long stalls the whole connection for that long; heartbeats are still
// sent, and the broker's bytes waiting in the socket count as a sign of
// life, so the connection is not closed for it. Use the default
// (non-inline) mode for any handler that may block.
//
// On Linux, [Config].BlockingRead (opt-in: a thread per connection) takes
// the socket away from the runtime's network poller so that the broker's
// bytes wake the reader's thread directly; with inline handlers and two
// or more Ps it cut the CPU per consumed message by about a fifth in
// BENCHMARKS.md's runs.
//
// With BlockingRead, [Config].ReadLinger (opt-in) trades latency for CPU:
// after a read that brought several deliveries or a publisher
// confirmation, the reader waits up to the linger before it reads again,
// so that one read takes what the broker wrote meanwhile. Nothing anyone
// waits for is held back — a reply, a close, the newest confirmation of a
// channel that a goroutine waits for, an RPC reply, the end of a block —
// and an ack that gives the broker back the prefetch credit it may be
// short of ends the wait too; deliveries and confirmations nobody waits
// for yet arrive up to the linger later. See [Config].ReadLinger for the
// whole contract, and BENCHMARKS.md ("Lingering reads") for what it saves.
//
// When an inline consumer ends (Cancel, a broker cancel, its channel's
// close), the deliveries still buffered go to its handler from a goroutine
// of the library, after the reader's last call; [Consumer.Done] is closed
// when the handler has returned for the last time.
//
// # Context support
//
// Every call that can block takes a ctx first. Cancelling ctx (or reaching
// its deadline) ends the caller's wait at once with ctx.Err(); it never
// leaves the connection or the channel in an inconsistent state. What
// happens to the request depends on the kind of call:
//
//   - Synchronous methods (declare, bind, delete, purge, Qos, ConfirmSelect,
//     transactions, [Conn.UpdateSecret], ...): the call returns ctx.Err() at
//     once, but the request stays queued or on the wire, because AMQP has no
//     way to take it back. Its reply, when it comes, is absorbed, and the
//     channel goes on with the next request. The effect may therefore still
//     happen: a queue may be declared, deleted or purged after the call
//     returned ctx.Err(). Calls that are safe to repeat (declarations with
//     the same arguments) can simply be retried. With a NoWait option
//     there is no reply to wait for: ctx only bounds waiting for a
//     recovery in progress, the call returns once the request is queued,
//     and a refusal closes the channel later (see [Channel.Err]).
//   - [Channel.Publish] and [Channel.PublishWithConfirm]: ctx bounds only
//     the waits before the message is queued for the socket — while the
//     broker blocks the connection (resource alarm), while channel.flow has
//     paused the channel, while the write buffer is over
//     [Config].WriteBufferLimit, while [Config].MaxUnconfirmed messages
//     await their confirmation, and while the connection recovers. If ctx
//     ends during such a wait, the message is not sent. Once Publish has
//     returned nil the message is queued and will be sent; cancelling ctx
//     afterwards does nothing. [Confirmation.Wait] and
//     [Channel.WaitConfirms] end only the wait: the confirmation still
//     arrives and settles the [Confirmation].
//   - Calls that create something the application would have to release:
//     if ctx ends before the broker's answer, the late result is undone as
//     soon as it arrives. [Conn.Channel] closes the channel the broker opens
//     late; [Channel.Consume] and [Channel.ConsumeFunc] cancel the consumer
//     the broker starts late, requeueing what it delivers meanwhile (with
//     AutoAck those messages are lost); [Channel.Get] requeues the message
//     the broker sends late (with autoAck it is lost).
//   - [Consumer.Next] and [Consumer.All]: ctx ends only the wait; no
//     delivery is lost, the next call gets it.
//   - [Consumer.Cancel]: ctx bounds the wait for cancel-ok. If it ends
//     first, Cancel returns ctx.Err(); the basic.cancel stays on the wire
//     and the Consumer ends when the broker's cancel-ok arrives.
//   - [Conn.Close]: ctx (or [Config].CloseTimeout, default 5 s, when ctx
//     has no deadline) bounds the wait for the broker's close-ok. When it
//     ends first, the connection is aborted: the socket is closed and Close
//     returns ctx.Err(). Either way the Conn is closed when Close returns.
//     [Channel.Close]: ctx bounds the wait for close-ok; if it ends first,
//     Close returns ctx.Err() and the close completes in the background.
//   - [Dial] and [DialConfig]: ctx bounds the whole of connecting (every
//     address tried, TCP, TLS and the AMQP handshake). Cancelling it after
//     Dial returned has no effect on the connection.
//
// Every call that takes a ctx returns ctx.Err() at once, with no side
// effect (nothing sent, nothing registered), when ctx has already ended.
// The one exception is [Conn.Close] and [Channel.Close], which close even
// then. A call waiting on ctx also returns when the connection or channel
// closes under it, with the reason (see Errors).
//
// # Publisher confirms
//
// In confirm mode ([Channel.ConfirmSelect]) what the library reports about
// a message is what the broker did with it, in every order the broker may
// send its answers: nil means the broker acknowledged the message and no
// queue-less return preceded the acknowledgement; [ErrNacked] means it
// refused it; a [*ReturnedError] means it returned the mandatory message
// because no queue took it; [ErrOutcomeUnknown] means the connection or
// channel was lost first and the message was not republished. There are
// three ways to learn it: [Channel.PublishWithConfirm] and its
// [Confirmation] (per message), [Channel.WaitConfirms] (per batch: nil only
// when every message published since the previous call was acknowledged,
// else a [*ConfirmsError] with the counts), and [Channel.OnConfirm] (the
// raw basic.ack and basic.nack frames).
//
// basic.return does not name the message it returns. The library matches a
// return on exchange, routing key, message-id and body with the outstanding
// mandatory messages, relying only on what RabbitMQ guarantees on a
// channel: returns come in publish order, and a message's return comes
// before the acknowledgement that covers it. When several identical
// messages are outstanding and the broker returns some of them, the
// protocol cannot tell which: those that may have been returned resolve
// with [ErrMaybeReturned], never with a guess. Give messages distinct
// MessageIDs to always get an exact answer.
//
// [Config].MaxUnconfirmed (default 10,000) bounds the messages per channel
// whose outcome is pending; Publish waits at the bound. ConfirmSelect is
// atomic with respect to concurrent Publish calls on the channel.
//
// Acknowledging deliveries is checked the same way: [Channel.Ack],
// [Channel.Nack], [Channel.Reject] and their [Delivery] forms return an
// error matching [ErrUnknownTag] and send nothing for a tag that awaits no
// acknowledgement (0 without multiple, already settled, delivered to an
// AutoAck consumer, never delivered on the channel), where the broker
// would close the channel with PRECONDITION_FAILED.
//
// # Errors
//
// An error from the broker is an [*Error] (an alias of the engine's type):
// its reply code, reply text and the method that caused it, and whether
// the whole connection closed (Conn true) or one channel (Conn false, after
// which the connection and its other channels go on). Every sentinel is
// package-prefixed ("pika: ...") and matched with [errors.Is]:
//
//   - reply codes: errors.Is(err, [ErrNotFound]) is true for every *Error
//     with code 404, whichever channel or connection it closed; likewise
//     [ErrAccessRefused], [ErrPreconditionFailed], [ErrResourceLocked],
//     [ErrNotAllowed] and the others. errors.As(err, &e) with e an *Error
//     gives the details, and (*Error).Retryable says whether a retry could
//     get past it.
//   - state: [ErrClosed] (the connection is closed; it also matches every
//     connection-level *Error) and [ErrChannelClosed] (the channel is
//     closed; it also matches every channel-level *Error).
//   - connecting: [ErrAuthentication], [ErrVhostRefused],
//     [ErrHandshakeClosed], [ErrHandshakeTimeout]; a bad URL wraps
//     [ErrBadURL].
//   - publishing: [ErrNacked] (the broker refused a message), [ErrReturned]
//     (a mandatory message could not be routed; the error is a
//     [*ReturnedError] holding it), [ErrMaybeReturned] (one of several
//     identical mandatory messages was returned), [ErrOutcomeUnknown] (the
//     channel closed before the confirmation), [ErrNotConfirmMode];
//     [Channel.WaitConfirms] returns a [*ConfirmsError] counting each.
//   - consuming: [ErrConsumerCancelled] (the broker cancelled the consumer),
//     [ErrConsumerClosed] (the application did, with [Consumer.Cancel]; a
//     consumer whose channel closed ends with the channel's close cause
//     instead), [ErrUnknownTag] and [ErrStaleDelivery] (acknowledgements
//     that were not sent).
//   - the link: [ErrHeartbeatTimeout], [ErrBlockedTimeout],
//     [ErrRecovering], [*RecoveryError].
//
// Calls on a closed channel or connection return the reason it closed (the
// broker's *Error, or the network error), not a bare sentinel.
//
// # Recovery
//
// Unless [Config].DisableRecovery is set, a Conn that loses its network
// connection without the application asking (network error, heartbeat
// timeout, broker restart) reconnects with [Config].Reconnect (exponential
// backoff by default), over every address of [Config].Addrs, and restores
// its channels (with their QoS, confirm and transaction modes), the
// exchanges, queues and bindings declared through it, and its consumers,
// with their tags. The Conn, its Channels and Consumers stay the same
// values. Calls made meanwhile wait, bounded by their ctx (or fail with
// [ErrRecovering] when [Config].FailWhileRecovering is set).
//
// Synchronous calls still waiting for their reply when the connection is
// lost (declarations, binds, Qos, Get, ...: the request on the wire, and
// those queued behind it on its channel) do not wait: they fail at once
// with the loss's cause, the value [RecoveryEvent].Err reports (a network
// error, [ErrHeartbeatTimeout], the broker's 320 CONNECTION_FORCED
// [*Error]), as the broker may or may not have carried out the request it
// received. Their channel is restored all the same; calling again waits
// for the recovery (repeating a declaration is safe).
//
// Messages published in confirm mode whose confirmation the loss cut off
// are published again on the recovered channel, in their original order,
// before anything new (unless [Config].DisableRepublish is set); their
// Confirmations and WaitConfirms report the new copies' outcomes. A
// publisher with confirms thus loses nothing across network failures,
// broker restarts and forced closes without retry code of its own. The
// price is at-least-once delivery: the broker may have taken a message
// before the loss, and consumers may then see it twice — give messages a
// MessageID and let consumers skip ids they have processed. The copies
// cost memory, bounded by MaxUnconfirmed messages per channel. With
// DisableRepublish, outstanding confirmations resolve with
// [ErrOutcomeUnknown] at the loss.
//
// Acknowledgements of deliveries from before the loss return
// [ErrStaleDelivery] and are not sent (the broker delivers those messages
// again). When recovery gives up, the Conn closes with a [*RecoveryError],
// which matches [ErrClosed]. A broker that refuses an attempt's login or
// virtual host, or closes an attempt's connection with a code that would
// not have been recovered from at the first loss (403 ACCESS_REFUSED, 530
// NOT_ALLOWED, ...), ends the recovery at once: the Conn closes with that
// error. [Conn.OnRecovery] reports each step; a
// channel that cannot be reopened (refused by the broker, or beyond the
// new connection's channel_max) closes with its own cause and the rest is
// restored.
//
// The record of what to restore follows what the broker says: a queue is
// forgotten (with its bindings) when the application deletes it, when the
// broker cancels a consumer of it and a passive declare then finds it
// deleted, and when a call on it fails with NOT_FOUND "no queue"; an
// exchange too. A queue with x-expires that was unused (no declare, get or
// consumer seen) for longer than its expiry when recovery runs is checked
// with a passive declare and, if the broker no longer has it, not declared
// again (RecoveryReport.Expired; its consumers end with
// [ErrQueueExpired]). [Config].RecoveryFilter leaves chosen exchanges,
// queues, bindings and consumers out.
//
// In a cluster, RabbitMQ also cancels the consumers of a classic queue
// whose node goes down, and answers NOT_FOUND ("home node ... is down or
// inaccessible") to its declaration, though the queue still exists. Such a
// consumer does not end: whether the broker cancelled it or recovery found
// its queue unavailable, the library checks the queue (a passive declare on
// a channel of its own) after each [Config].Reconnect delay, reports each
// wait to [Conn.OnRecovery] ([RecoveryConsumerWaiting], its Err matching
// [ErrQueueUnavailable]) and restarts the consumer, with its tag, on its
// channel once the queue is back ([RecoveryConsumerRestored]). Recovery
// also checks (passively) a consumed queue that this Conn did not declare
// before its basic.consume, so that a down or missing one does not close
// the application's channel. RabbitMQ 3.10 does not cancel the consumers of a quorum queue when its leader
// moves: they keep running. A stream consumer restarted by recovery
// attaches again with the x-stream-offset it was given, unless a
// [StreamTracker] (ConsumeOptions.Stream) makes it resume after the last
// offset processed.
//
// [Channel.Close] during a recovery closes the channel at once if the
// recovery has not reopened it yet, and on the new connection (consumers
// restarted there included) if it has; it returns ctx's error if ctx ends
// before the broker's close-ok. A second [Conn.Close] waits for the first,
// bounded by its own ctx.
//
// Each connection attempt logs in with [Config].Credentials when set (a
// fresh OAuth 2 token, say), else with the secret the broker last accepted
// through [Conn.UpdateSecret], else with [Config].Username and Password;
// the PLAIN and AMQPLAIN entries of [Config].Mechanisms get the same
// secret. [Config].SecretRefresh hands a fresh secret from Credentials to
// the broker with connection.update-secret before the old one expires.
// RabbitMQ 3.10 accepts update-secret for users of its internal database
// (without checking the secret: it changes nothing for them), so this is
// tested against the broker as well as against a fake peer. A
// connection.blocked that the broker sends with the open-ok of a new
// connection is kept ([Conn.IsBlocked], [Conn.OnBlocked]).
//
// # RPC
//
// [RPCClient] makes request/reply calls over RabbitMQ's direct reply-to and
// [Serve] answers them:
//
//	go pika.Serve(ctx, conn, "fib", func(ctx context.Context, req *pika.Delivery) (pika.Message, error) {
//		return pika.Message{Body: answer(req.Body)}, nil
//	}, pika.ServeOptions{})
//
//	client, err := pika.NewRPCClient(ctx, conn, pika.RPCClientOptions{})
//	...
//	reply, err := client.Call(ctx, "", "fib", pika.Message{Body: []byte("10")})
//
// A call ends with its reply, its ctx, or a clear error; it never waits for
// a reply that cannot come. Calls waiting when the connection is lost fail
// with [ErrRPCInterrupted] (direct reply-to delivers replies only to the
// connection that sent the request) and are not retried; the recovered
// connection serves new calls. Serve acknowledges a request only after the
// broker confirmed its reply, so requests are handled at least once, and
// RPCClient drops a second reply to the same call ([RPCStats].Late).
//
// # Logging
//
// [Config].Logger takes a [*slog.Logger]. At Debug level it receives every
// frame in and out, decoded: direction, frame type, channel, and for
// methods the method's name and fields. A few events the application may
// want to know about are logged at Info or Warn level: an acknowledgement
// of a delivery from before a recovery that was not sent, a delivery for a
// consumer nobody on the channel has. Use [Conn.OnRecovery] to follow
// recovery. With no Logger, nothing is logged.
//
// # Observability
//
// [Config].Hooks takes values implementing one or more small hook
// interfaces ([ConnectHook], [DisconnectHook], [RecoveryHook],
// [BlockedHook], [ChannelHook], [PublishHook], [PublishOutcomeHook],
// [DeliveryHook], [ProcessHook], [SettleHook], [ConsumerHook],
// [BytesHook]); see [Hook] for which goroutine runs each. Hooks never run
// under a lock of the library nor on the socket's reader; with no hooks
// the publish and consume paths do no extra work beyond a length check.
// A [PublishHook] may add headers with [Publishing.SetHeader] (the
// caller's [Message].Headers is never modified: the first added header
// copies the table) and carry a context to the message's outcome
// ([PublishOutcome].Ctx, with the publish-to-outcome latency); a
// [ProcessHook] derives the ctx of a [Channel.ConsumeFunc] handler. The
// modules github.com/pika-go/pika/plugins/otelpika (OpenTelemetry spans,
// trace context propagation through headers, and metrics) and
// github.com/pika-go/pika/plugins/prompika (a Prometheus collector) are
// built on them.
package pika
