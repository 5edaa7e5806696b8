// A Node.js HTTPS service with no tracing code, calling the next hop over
// HTTPS when given one. Node's TLS runs OpenSSL over memory BIOs: the
// socket I/O happens outside SSL_read/SSL_write.
// Usage: TLS_CERT=pem TLS_KEY=pem [NODE_EXTRA_CA_CERTS=ca.pem] node node_https.js PORT [DOWNSTREAM_BASE_URL]
const fs = require("fs");
const https = require("https");
const port = Number(process.argv[2]);
const downstream = process.argv[3];
// Keep-alive to the next hop, as a real service's client would.
const agent = new https.Agent({ keepAlive: true });

https
  .createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }, (req, res) => {
    const n = req.url.split("?")[0].split("/")[2];
    if (!req.url.startsWith("/hop/")) {
      res.writeHead(404);
      return res.end();
    }
    if (!downstream) {
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end(`leaf-${n}`);
    }
    https
      .get(`${downstream}/${n}`, { agent }, (answer) => {
        let body = "";
        answer.on("data", (c) => (body += c));
        answer.on("end", () => {
          res.writeHead(answer.statusCode, { "content-type": "text/plain" });
          res.end(`${n}>${body}`);
        });
      })
      .on("error", (e) => {
        res.writeHead(502);
        res.end(String(e));
      });
  })
  .listen(port, "127.0.0.1");
