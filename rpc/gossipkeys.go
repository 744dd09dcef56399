package rpc

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/server"
	"github.com/topkd/topkd/server/security"
)

// rotateGossipKey runs one rotation step; the answer lists every member's
// keys even when the step failed somewhere.
func rotateGossipKey(ctx context.Context, n *server.Node, op, key string) (*topkv1.RotateGossipKeyResponse, error) {
	var k []byte
	if op != server.GossipKeyList {
		var err error
		if k, err = security.ParseGossipKey(key); err != nil {
			return nil, fmt.Errorf("%w: %v", server.ErrInvalid, err)
		}
	}
	members, err := n.RotateGossipKey(ctx, op, k)
	out := &topkv1.RotateGossipKeyResponse{}
	for _, m := range members {
		mk := &topkv1.MemberGossipKeys{Node: m.Node, KeyIds: m.KeyIDs}
		if m.Err != nil {
			mk.Error = m.Err.Error()
		}
		out.Members = append(out.Members, mk)
	}
	return out, err
}

func (s *service) RotateGossipKey(ctx context.Context, req *connect.Request[topkv1.RotateGossipKeyRequest]) (*connect.Response[topkv1.RotateGossipKeyResponse], error) {
	out, err := rotateGossipKey(ctx, s.n, req.Msg.Op, req.Msg.Key)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(out), nil
}

// gossipKeys serves POST /api/gossip-keys {"op": "install", "key": "..."}.
func (h *rest) gossipKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Op  string `json:"op"`
		Key string `json:"key"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err := strictUnmarshal(body, &req); err != nil {
		writeErr(w, badRequest("body", "want {\"op\": \"install|use|remove|list\", \"key\": \"BASE64\"}"))
		return
	}
	out, err := rotateGossipKey(r.Context(), h.n, req.Op, req.Key)
	if err != nil && out == nil {
		writeErr(w, err)
		return
	}
	b, _ := protojson.Marshal(out)
	status := http.StatusOK
	if err != nil {
		status = httpStatus(code(err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
