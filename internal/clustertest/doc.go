// Package clustertest holds pika's integration tests against a 3-node
// RabbitMQ cluster: node failover under load with a quorum queue, a classic
// queue whose node stops, streams over AMQP 0-9-1, quorum queue features and
// connection placement.
//
// The tests are built only with the cluster build tag, so the ordinary
// go test ./... (which runs against the single broker on 5672) leaves them
// out. scripts/test.sh runs them in a step of their own:
//
//	bash scripts/cluster.sh start
//	PIKA_CLUSTER_URLS=$(bash scripts/cluster.sh urls) go test -race -tags cluster ./internal/clustertest
//	bash scripts/cluster.sh stop
//
// PIKA_CLUSTER_URLS lists the nodes' AMQP URLs, comma-separated, node 1
// first. When it is empty or a node does not answer, the tests are skipped,
// or fail when CI is true. The tests stop and start nodes with
// scripts/cluster.sh ctl N stop_app|start_app, so they run one at a time and
// never touch the default broker.
package clustertest
