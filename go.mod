module github.com/pika-go/pika

go 1.26
