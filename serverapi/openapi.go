package serverapi

import (
	_ "embed"
	"net/http"

	"github.com/heraldhq/herald/internal/httpjson"
)

// openAPI describes the server API in OpenAPI 3.0. It is served without a
// key: it tells nothing the documentation does not.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI description; the caller must not
// change it.
func OpenAPI() []byte { return openAPI }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) { httpjson.Write(w, http.StatusOK, openAPI) }
