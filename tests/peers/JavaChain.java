// A Java service with no tracing code, run by the source launcher:
//   java JavaChain.java PORT [DOWNSTREAM]
// GET /client/N calls DOWNSTREAM/leaf/N with java.net.http.HttpClient, whose
// requests are written by the client's own I/O threads, not the handler's;
// GET /url/N does the same with HttpURLConnection, on the handler's thread;
// anything else answers "leaf".
import com.sun.net.httpserver.HttpServer;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.concurrent.Executors;

public class JavaChain {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String down = args.length > 1 ? args[1] : null;
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 128);
        server.createContext("/", exchange -> {
            String[] parts = exchange.getRequestURI().getPath().split("/");
            String n = parts.length > 2 ? parts[2] : "0";
            String body;
            int status = 200;
            try {
                if (down != null && parts.length > 1 && parts[1].equals("client")) {
                    HttpRequest request = HttpRequest.newBuilder(URI.create(down + "/leaf/" + n)).build();
                    body = n + ">" + client.send(request, HttpResponse.BodyHandlers.ofString()).body();
                } else if (down != null && parts.length > 1 && parts[1].equals("url")) {
                    HttpURLConnection c = (HttpURLConnection) new URL(down + "/leaf/" + n).openConnection();
                    try (InputStream in = c.getInputStream()) {
                        body = n + ">" + new String(in.readAllBytes());
                    }
                } else {
                    body = "leaf-" + n;
                }
            } catch (Exception e) {
                status = 502;
                body = e.toString();
            }
            byte[] bytes = body.getBytes();
            exchange.sendResponseHeaders(status, bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.start();
    }
}
