// One ipx process: ipx's own node handler (createIPXNodeServer: /{modifiers}/{id}, e.g.
// /w_400,q_80,f_jpeg/dune.jpg) over ipxFSStorage, on 127.0.0.1:PORT.
//
//   node ipx-server.mjs PORT CORPUS_DIR      (run from the folder where ipx is installed)
//
// The query string is dropped before ipx sees the path: the benchmark's cache buster (?n=..)
// would otherwise become part of the file name (ipx takes the id from the raw path). ipx keeps
// no result cache (createIPX renders on every call), so the buster changes nothing else.
import http from "node:http";
import { createIPX, createIPXNodeServer, ipxFSStorage } from "ipx";

const [port, dir] = process.argv.slice(2);
const ipx = createIPX({ storage: ipxFSStorage({ dir }) });
const handler = createIPXNodeServer(ipx);
http
  .createServer((req, res) => {
    const q = req.url.indexOf("?");
    if (q >= 0) req.url = req.url.slice(0, q);
    handler(req, res);
  })
  .listen(Number(port), "127.0.0.1", () => console.error(`ipx listening on 127.0.0.1:${port}`));
