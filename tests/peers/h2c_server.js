// Cleartext HTTP/2 (h2c, prior knowledge) server with no tracing code.
// Usage: node h2c_server.js PORT
const http2 = require("http2");
const server = http2.createServer();
server.on("stream", (stream, headers) => {
  const path = headers[":path"];
  let size = 0;
  stream.on("data", (c) => (size += c.length));
  stream.on("end", () => {
    if (path.startsWith("/missing")) {
      stream.respond({ ":status": 404 });
      stream.end();
    } else if (path.startsWith("/boom")) {
      stream.respond({ ":status": 503 });
      stream.end("unavailable");
    } else {
      stream.respond({ ":status": 200, "content-type": "text/plain" });
      stream.end(`h2 ok ${path} ${size}`);
    }
  });
});
server.listen(Number(process.argv[2]), "127.0.0.1");
