/* Fuzz target: the RAS client text protocol (src/ras/ras_client_proto.c) as the client port reads
 * it: bytes arrive in pieces into the 1 KiB line buffer (client_read), each complete line is
 * parsed as a command until STATUS; a line that fills the buffer closes the client. The first
 * input byte sets the size of the pieces. Oracles: replies are terminated single lines, a TIMEOUT
 * is finite and not negative. */
#include "fuzz.h"
#include "ras/ras_internal.h"

#include <math.h>
#include <string.h>

FUZZ_QUIET_INIT

/* Returns false when the client would stop reading (STATUS). */
static bool command(const char *line)
{
    struct ac_ras_client_cmd cmd;
    ac_ras_client_parse_cmd(line, &cmd);
    FUZZ_CHECK(memchr(cmd.reply, '\0', sizeof(cmd.reply)) != NULL);
    FUZZ_CHECK(strchr(cmd.reply, '\n') == NULL);
    switch (cmd.kind) {
    case AC_RAS_CMD_NONE:
        FUZZ_CHECK(line[0] == '\0');
        return true;
    case AC_RAS_CMD_TIMEOUT:
        FUZZ_CHECK(isfinite(cmd.timeout_s) && cmd.timeout_s >= 0 && strcmp(cmd.reply, "OK") == 0);
        return true;
    case AC_RAS_CMD_FORMAT:
        FUZZ_CHECK(strcmp(cmd.reply, "OK") == 0);
        return true;
    case AC_RAS_CMD_REPLY:
        FUZZ_CHECK(cmd.reply[0] != '\0');
        return true;
    case AC_RAS_CMD_STATUS:
        return false;
    }
    FUZZ_CHECK(!"unknown command kind");
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[AC_RAS_CLIENT_LINE_MAX];
    size_t in_len = 0, off = 1, piece;
    if (size == 0)
        return 0;
    piece = data[0] % 64 + 1;
    while (off < size) {
        size_t n = size - off < piece ? size - off : piece;
        if (n > sizeof(in) - in_len)
            n = sizeof(in) - in_len;
        memcpy(in + in_len, data + off, n);
        off += n;
        in_len += n;
        size_t used = 0, taken;
        char *line;
        while ((taken = ac_ras_client_take_line(in + used, in_len - used, &line)) > 0) {
            FUZZ_CHECK(taken <= in_len - used && line == in + used);
            FUZZ_CHECK(strlen(line) < taken);
            used += taken;
            if (!command(line))
                return 0;
        }
        if (used == 0 && in_len == sizeof(in))
            return 0; /* over-long line: the client is closed */
        memmove(in, in + used, in_len - used);
        in_len -= used;
    }
    return 0;
}
