# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_oauth2_sendmail_global_optspecs
    string join \n t/read-recipients i f/from= read-envelope-from F= a/account= C/config= v N= R= V= B= o= b= q= dry-run system generate= L= h= n U G m X= A= d= help version
end

function __fish_oauth2_sendmail_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_oauth2_sendmail_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_oauth2_sendmail_using_subcommand
    set -l cmd (__fish_oauth2_sendmail_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s f -l from -d 'Envelope sender (`<>` for the null sender); also picks the account' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s F -d 'Display name for a From header that is added or rewritten' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s a -l account -d 'Use this account' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s C -l config -d 'Config file' -r -F
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s N -d 'DSN: when to notify (never, or a list of success,failure,delay)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s R -d 'DSN: what to return (full or hdrs)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s V -d 'DSN: envelope id' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s B -d 'Body type (7BIT or 8BITMIME); accepted' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s o -d 'Sendmail options: -oi, -odq (queue only), -odb, -odi, -oem, ... (others accepted)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s b -d 'Mode: -bm deliver (default), -bp list the queue' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s q -d 'Process the queue now (an optional interval is accepted and ignored)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -l generate -d 'Print the man page or a shell completion script on stdout (for installing them)' -r -f -a "man\t'The man page (section 1, with the configuration reference)'
bash\t''
zsh\t''
fish\t''"
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s L -d 'Accepted for compatibility' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s h -d 'Accepted for compatibility (hop count)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s X -d 'Accepted for compatibility (traffic log)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s A -d 'Accepted for compatibility' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s d -d 'Accepted for compatibility (sendmail debug level, e.g. -d0.1)' -r
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s t -l read-recipients -d 'Add recipients from To, Cc and Bcc (or from the newest Resent-* block)'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s i -d 'Accepted: input is always read to end of file'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -l read-envelope-from -d 'Take the envelope sender from the From header (-f wins)'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s v -d 'Print the SMTP dialogue to stderr (authentication data redacted)'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -l dry-run -d 'Resolve account, envelope and header changes, print them, send nothing'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -l system -d 'Use the host\'s system account, config, tokens and queue (root only), e.g. `--system -q`'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s n -d 'Accepted for compatibility'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s U -d 'Accepted for compatibility'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s G -d 'Accepted for compatibility'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -s m -d 'Accepted for compatibility'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -l help -d 'Print help'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -l version -d 'Print version'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -a "login" -d 'Authorise an account and store its tokens'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -a "token" -d 'Print a valid access token (refreshed if needed), e.g. for mbsync `PassCmd`'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -a "status" -d 'Show accounts, their servers and token state (no secrets)'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -a "check" -d 'Connect, STARTTLS, authenticate and quit, sending nothing'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -a "logout" -d 'Delete an account\'s stored tokens'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_needs_command" -a "queue" -d 'The queue of messages waiting to be sent'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand login" -l provider -d 'With `login EMAIL`: the provider of a new account, instead of inferring it from the address\'s domain or its MX records' -r -f -a "microsoft\t''
microsoft-china\t''
gmail\t''
custom\t''"
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand login" -l flow -d 'The flow to use instead of the account\'s configured one' -r -f -a "authcode\t''
devicecode\t''
password\t''
client-credentials\t''"
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand login" -l import-refresh-token -d 'Read a refresh token from FILE (`-` = stdin), redeem it once and store the result' -r -F
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand login" -l no-browser -d 'Do not open a browser; the URL is printed to stderr'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand status" -l json -d 'One JSON object on stdout, for monitoring (schema in the man page)'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list flush remove" -f -a "list" -d 'List queued and failed messages'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list flush remove" -f -a "flush" -d 'Try to send every queued message now'
complete -c oauth2-sendmail -n "__fish_oauth2_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list flush remove" -f -a "remove" -d 'Remove a message from the queue'
