package wire

// methods_gen.go is generated from the spec files; CI re-runs this and fails
// when the result differs from the committed file.
//go:generate go run ../internal/specgen -json ../spec/amqp-rabbitmq-0.9.1.json -xml ../spec/amqp0-9-1.extended.xml -out methods_gen.go
