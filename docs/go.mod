module github.com/pika-go/pika/docs

go 1.26

require (
	github.com/pika-go/pika v0.0.0
	github.com/rabbitmq/amqp091-go v1.16.0
)

replace github.com/pika-go/pika => ..
