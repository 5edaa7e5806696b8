// Node.js http server with no tracing code. Usage: node node_app.js PORT
const http = require("http");
const port = Number(process.argv[2]);
http
  .createServer((req, res) => {
    let size = 0;
    req.on("data", (c) => (size += c.length));
    req.on("end", () => {
      if (req.url.startsWith("/items/")) {
        // No Content-Length: Node answers chunked.
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("item-");
        res.end(req.url.split("/")[2]);
      } else if (req.method === "POST") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end(`got ${size} bytes`);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  })
  .listen(port, "127.0.0.1");
