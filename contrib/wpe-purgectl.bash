# bash completion for wpe-purgectl(1)
_wpe_purgectl()
{
	local cur prev words cword cmd i
	_init_completion || return
	local commands="enqueue status wait list stats cancel requeue pause resume ping installs"
	cmd=
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		-s | --socket | --url | --token-file | --cacert) ((i++)) ;;
		-*) ;;
		*) cmd=${words[i]}; break ;;
		esac
	done
	case $prev in
	-s | --socket | --token-file | --cacert) _filedir; return ;;
	--url) return ;;
	-t | --type) COMPREPLY=($(compgen -W "object page cdn all" -- "$cur")); return ;;
	--reason | --timeout | --idempotency-key) return ;;
	--source) COMPREPLY=($(compgen -W "ci= job_url= commit= ref= actor= pipeline=" -- "$cur"))
		compopt -o nospace 2>/dev/null; return ;;
	esac
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "$commands -s --socket --url --token-file --cacert --json --help --version" -- "$cur"))
		return
	fi
	case $cmd in
	enqueue) COMPREPLY=($(compgen -W "-t --type --reason --wait --timeout --idempotency-key --source --no-source --help" -- "$cur")) ;;
	wait) COMPREPLY=($(compgen -W "--timeout --help" -- "$cur")) ;;
	*) COMPREPLY=($(compgen -W "--help" -- "$cur")) ;;
	esac
} && complete -F _wpe_purgectl wpe-purgectl
