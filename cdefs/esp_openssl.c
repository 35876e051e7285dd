/* placeholder replaced by the real kernel */
#include "esp.h"
#include <openssl/opensslv.h>
const char *ipsg_backend_version(void) { return OPENSSL_VERSION_TEXT; }
