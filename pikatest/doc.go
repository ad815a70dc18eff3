// Package pikatest is an in-process AMQP 0-9-1 broker for tests, shaped
// like net/http/httptest: [NewBroker] starts a broker on 127.0.0.1 at a
// random port, [Broker.URL] gives the URL any AMQP 0-9-1 client can dial
// (pika, amqp091-go, ...), and the test's cleanup closes it. [Broker.Dial]
// connects through an in-memory pipe instead (pika's Config.Dial), buffered
// like a loopback TCP connection but without its system calls.
//
// The broker behaves like RabbitMQ 3.10 for what applications rely on, with
// RabbitMQ's reply codes, error texts and channel-versus-connection scoping:
//
//   - Connections: PLAIN and AMQPLAIN logins against configured users,
//     virtual hosts, tune negotiation, heartbeats (sent when idle; a client
//     silent for two intervals is disconnected), client-provided names,
//     connection.blocked/unblocked during a memory alarm.
//   - Exchanges: the default exchange and amq.direct, amq.fanout,
//     amq.topic, amq.headers, amq.match; direct, fanout, topic (RabbitMQ's
//     '*' and '#' rules) and headers (x-match all, any, all-with-x,
//     any-with-x) exchanges; exchange-to-exchange bindings, alternate
//     exchanges, internal exchanges, passive declaration, auto-delete.
//   - Queues: server-named, exclusive, auto-delete, durable (kept by
//     [Broker.Restart] with their persistent messages), passive
//     declaration, purge, delete with if-unused and if-empty,
//     x-message-ttl and per-message expiration (expiring at the head, as
//     classic queues do), x-expires, x-max-length and x-max-length-bytes
//     with drop-head, reject-publish and reject-publish-dlx, dead-lettering
//     with x-death and x-first-death-* headers, x-max-priority, quorum
//     queue arguments (x-queue-type quorum, with x-delivery-count on
//     redeliveries), x-single-active-consumer.
//   - Consumers: basic.qos with RabbitMQ's meaning (global=false limits
//     each consumer created afterwards, global=true the whole channel),
//     ack, nack and reject with multiple and requeue (requeued messages go
//     back to their original position, marked redelivered), exclusive
//     consumers, x-priority, basic.cancel to consumers whose queue is
//     deleted (for clients announcing consumer_cancel_notify), basic.get,
//     basic.recover, direct reply-to (amq.rabbitmq.reply-to).
//   - Publishing: mandatory returns (312 NO_ROUTE), publisher confirms
//     (runs of acks coalesced with multiple=true; nacks for reject-publish),
//     transactions (publishes and acknowledgements applied at tx.commit),
//     CC and BCC headers, user-id and expiration validation.
//
// # Control and fault injection
//
// A test inspects the broker with [Broker.Queue], [Broker.Queues],
// [Broker.Messages], [Broker.Exchange] and [Broker.Connections], and waits
// for a condition without sleeping with [Broker.Wait], [Broker.WaitQueue]
// and [Broker.WaitConnections]. It injects faults with
// [Broker.CloseConnection] (320 CONNECTION_FORCED, as `rabbitmqctl
// close_connection`), [Broker.CutConnection] (the socket closes without a
// goodbye), [Broker.StallConnection] (the broker stops reading and writing
// while the socket stays open), [Broker.SetAlarm] (a memory alarm that
// blocks publishers), [Broker.SetConfirmPolicy] (delay, drop or nack
// confirms), and [Broker.Restart], [Broker.Stop] and [Broker.Start].
//
// A fault strikes what the broker has received, not what the client has
// sent: an acknowledgement or a publish without a confirmation returns
// before it reaches the broker, and a fault injected right after it may
// beat it there (the message then comes back, redelivered, as it would from
// RabbitMQ). To inject a fault at a known point, wait first for the
// broker's view, e.g. [Broker.WaitQueue] until Unacked is 0 after an ack.
//
// # Not implemented
//
// These fail with 540 NOT_IMPLEMENTED and a text naming what is missing:
// stream queues (x-queue-type stream), and, as in RabbitMQ itself,
// basic.publish with immediate=true, basic.qos with a prefetch size,
// basic.recover with requeue=false and channel.flow with active=false.
// Exchange types of plugins (x-consistent-hash, x-delayed-message, ...) get
// what a RabbitMQ without the plugin answers: 503 COMMAND_INVALID "unknown
// exchange type". Not modelled at all: permissions (every user may do
// everything in every virtual host), policies, the management API,
// clustering, TLS, EXTERNAL authentication, and flow control of publishers
// by slow consumers (queues grow without bound). Tuning arguments such as
// x-queue-mode and x-queue-master-locator are accepted and compared on
// redeclaration, without effect. Quorum queues are classic queues that also
// count deliveries (x-delivery-count, x-delivery-limit); confirms are sent
// as soon as a message is routed.
//
// # Conformance
//
// The scenarios of internal/conformance, which CI runs against RabbitMQ,
// run against this broker too (conformance_test.go): the same reply codes,
// texts, failing-method ids and channel-versus-connection scoping. The table
// runs through [Broker.Dial], and its handshake and frame scenarios over TCP
// as well. So do the alarm scenarios (driven by [Broker.SetAlarm]) and the
// restart scenarios (driven by [Broker.Restart]), over TCP.
//
// # Concurrency
//
// A Broker's methods are safe for concurrent use. The broker serialises
// its state behind one lock; each connection has a reader and a writer
// goroutine, and deliveries are queued for the writer without waiting for
// the socket.
package pikatest
