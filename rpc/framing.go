package rpc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// clientErrors wraps the Connect handlers so that two kinds of bad request
// get a client error that says what is wrong:
//   - a gRPC or gRPC-Web body that ends inside a message envelope: connect
//     answers Internal; it is the client's InvalidArgument;
//   - a content type no protocol speaks: connect answers 415 with an empty
//     body; it gets a JSON body naming the ones it takes.
func clientErrors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc") && r.Body != nil {
			r.Body = &envelopeGuard{r: r.Body}
		}
		h.ServeHTTP(&mediaTypeWriter{ResponseWriter: w, contentType: r.Header.Get("Content-Type")}, r)
	})
}

// envelopeGuard passes an enveloped body through, turning an end inside an
// envelope (its 5-byte prefix or its message) into InvalidArgument.
type envelopeGuard struct {
	r       io.ReadCloser
	prefix  [5]byte
	have    int   // prefix bytes seen of the current envelope
	pending int64 // message bytes still due
}

func (g *envelopeGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	for b := p[:n]; len(b) > 0; {
		if g.pending > 0 {
			k := int(min(int64(len(b)), g.pending))
			g.pending -= int64(k)
			b = b[k:]
			continue
		}
		k := copy(g.prefix[g.have:], b)
		g.have += k
		b = b[k:]
		if g.have == 5 {
			g.pending, g.have = int64(binary.BigEndian.Uint32(g.prefix[1:])), 0
		}
	}
	if errors.Is(err, io.EOF) && (g.have > 0 || g.pending > 0) {
		return n, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("the request ends inside a message envelope (%d prefix bytes, %d message bytes missing)", (5-g.have)%5, g.pending))
	}
	return n, err
}

func (g *envelopeGuard) Close() error { return g.r.Close() }

// mediaTypeWriter gives connect's bodiless 415 a body.
type mediaTypeWriter struct {
	http.ResponseWriter
	contentType string
	replaced    bool
}

func (w *mediaTypeWriter) WriteHeader(code int) {
	if code != http.StatusUnsupportedMediaType {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.replaced = true
	w.Header().Set("Content-Type", "application/json")
	w.ResponseWriter.WriteHeader(code)
	msg := fmt.Sprintf("content type %q is not supported: send application/proto or application/json (Connect), application/grpc[+proto|+json] or application/grpc-web[+proto|+json]", w.contentType)
	b, _ := json.Marshal(map[string]string{"code": connect.CodeInvalidArgument.String(), "message": msg})
	_, _ = w.ResponseWriter.Write(b)
}

func (w *mediaTypeWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil // connect's own (empty) body
	}
	return w.ResponseWriter.Write(b)
}

func (w *mediaTypeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *mediaTypeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
