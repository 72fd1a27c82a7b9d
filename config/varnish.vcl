# Varnish in front of imgnode, purged by tag (Debian: apt install varnish varnish-modules).
# The node sends every image answer's tags in `Surrogate-Key`; this VCL files each object
# under them with vmod-xkey, and answers the node's purges (`[[edge.purge]] kind =
# "varnish"`: `PURGE /` with the tags in the `xkey` header). The integration tests run this
# file as it is, with the backend port replaced.
vcl 4.1;

import xkey;

backend imgnode {
    .host = "127.0.0.1";
    .port = "8080";
}

# Who may purge: the imgnode nodes.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey) {
            set req.http.n-gone = xkey.purge(req.http.xkey);
            return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
        }
        return (synth(400, "PURGE needs an xkey header"));
    }
    # The tenant API answers no-store; never cache or coalesce it.
    if (req.url ~ "^/api/") {
        return (pass);
    }
}

sub vcl_backend_response {
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
}

sub vcl_deliver {
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    if (obj.hits > 0) {
        set resp.http.X-Edge-Cache = "HIT";
    } else {
        set resp.http.X-Edge-Cache = "MISS";
    }
}
