// Package docs holds the code behind the repository's guides: every Go
// snippet of MIGRATING.md is a region of migrating_test.go, compiled with
// both amqp091-go and pika, and TestMigratingSnippets checks that the guide
// shows each region exactly. It is a module of its own so that the core
// module stays standard-library only.
package docs
