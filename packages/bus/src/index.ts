export * from "./nats-server.ts"
